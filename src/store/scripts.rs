//! The Lua scripts, compiled in and loaded once at start.

use redis::Script;

/// `(name, source)` of every script, in `lua/`.
pub const SOURCES: [(&str, &str); 8] = [
    ("create_trans", include_str!("../../lua/create_trans.lua")),
    ("claim_due", include_str!("../../lua/claim_due.lua")),
    ("record", include_str!("../../lua/record.lua")),
    ("transition", include_str!("../../lua/transition.lua")),
    ("prune_created", include_str!("../../lua/prune_created.lua")),
    (
        "register_branch",
        include_str!("../../lua/register_branch.lua"),
    ),
    ("reset_due", include_str!("../../lua/reset_due.lua")),
    ("kv_put", include_str!("../../lua/kv_put.lua")),
];

/// Every script, ready to call by SHA (`redis::Script` sends EVALSHA and
/// reloads the script if Redis lost it).
pub struct Scripts {
    /// `lua/create_trans.lua`
    pub create_trans: Script,
    /// `lua/claim_due.lua`
    pub claim_due: Script,
    /// `lua/record.lua`
    pub record: Script,
    /// `lua/transition.lua`
    pub transition: Script,
    /// `lua/prune_created.lua`
    pub prune_created: Script,
    /// `lua/register_branch.lua`
    pub register_branch: Script,
    /// `lua/reset_due.lua`
    pub reset_due: Script,
    /// `lua/kv_put.lua`
    pub kv_put: Script,
}

impl Scripts {
    /// Builds every script from its source.
    pub fn new() -> Self {
        Self {
            create_trans: Script::new(SOURCES[0].1),
            claim_due: Script::new(SOURCES[1].1),
            record: Script::new(SOURCES[2].1),
            transition: Script::new(SOURCES[3].1),
            prune_created: Script::new(SOURCES[4].1),
            register_branch: Script::new(SOURCES[5].1),
            reset_due: Script::new(SOURCES[6].1),
            kv_put: Script::new(SOURCES[7].1),
        }
    }

    /// `(name, script)` of every script, for loading at start.
    pub fn all(&self) -> [(&'static str, &Script); 8] {
        [
            (SOURCES[0].0, &self.create_trans),
            (SOURCES[1].0, &self.claim_due),
            (SOURCES[2].0, &self.record),
            (SOURCES[3].0, &self.transition),
            (SOURCES[4].0, &self.prune_created),
            (SOURCES[5].0, &self.register_branch),
            (SOURCES[6].0, &self.reset_due),
            (SOURCES[7].0, &self.kv_put),
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
