//! The Lua scripts, compiled in and loaded once at start. Each is named
//! once, in the list at the bottom, with the label its calls are counted
//! under (`dtx_redis_script_calls_total{script=...}`); the source list, the
//! struct and the loading order all come from it.

use redis::{Script, ScriptInvocation, ToRedisArgs};

mod claim_due;
mod create_trans;
mod heartbeat;
mod kv_put;
mod prune_created;
mod record;
mod register_branch;
mod reset_due;
mod set_aside;
mod transition;

/// One compiled-in script: its name (the file `lua/<name>.lua`), the
/// metric label of its calls, and the script itself.
pub struct LuaScript {
    /// The file name without `.lua`.
    pub name: &'static str,
    /// The `script` label of its metrics.
    pub label: &'static str,
    script: Script,
}

impl LuaScript {
    fn new(name: &'static str, label: &'static str, source: &str) -> Self {
        #[cfg(feature = "self-check")]
        let source = &crate::self_check::patch_script(name, source);
        Self {
            name,
            label,
            script: Script::new(source),
        }
    }

    /// The script, for loading.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Starts one call: add its keys and arguments, then run it with
    /// `Store::eval`.
    pub fn invoke(&self) -> Invocation<'_> {
        Invocation {
            of: self,
            inv: self.script.prepare_invoke(),
        }
    }
}

/// One call of a script being put together.
pub struct Invocation<'a> {
    /// The script called.
    pub of: &'a LuaScript,
    inv: ScriptInvocation<'a>,
}

impl Invocation<'_> {
    /// Adds a key (`KEYS[n]`).
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.inv.key(key);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.inv.arg(arg);
        self
    }

    /// What redis-rs sends.
    pub(crate) fn redis(&self) -> &ScriptInvocation<'_> {
        &self.inv
    }
}

macro_rules! scripts {
    ($($name:ident: $label:literal),* $(,)?) => {
        /// `(name, source)` of every script, in `lua/`.
        pub const SOURCES: &[(&str, &str)] = &[
            $((stringify!($name), include_str!(concat!("../../../lua/", stringify!($name), ".lua"))),)*
        ];

        /// Every script, ready to call by SHA (`redis::Script` sends
        /// EVALSHA and reloads the script if Redis lost it).
        pub struct Scripts {
            $(
                #[doc = concat!("`lua/", stringify!($name), ".lua`, counted as `", $label, "`")]
                pub $name: LuaScript,
            )*
        }

        impl Scripts {
            /// Builds every script from its source.
            pub fn new() -> Self {
                Self {
                    $($name: LuaScript::new(
                        stringify!($name),
                        $label,
                        include_str!(concat!("../../../lua/", stringify!($name), ".lua")),
                    ),)*
                }
            }

            /// Every script, in the order of the list, for loading at start.
            pub fn all(&self) -> Vec<&LuaScript> {
                vec![$(&self.$name,)*]
            }
        }
    };
}

scripts!(
    create_trans: "create_trans",
    claim_due: "claim_due",
    record: "record",
    transition: "transition",
    prune_created: "prune_created",
    register_branch: "register_branch",
    reset_due: "reset_due",
    kv_put: "kv_put",
    set_aside: "set_aside",
    heartbeat: "heartbeat",
);

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
