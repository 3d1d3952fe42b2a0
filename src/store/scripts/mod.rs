//! The Lua scripts, compiled in and loaded once at start. Each is named
//! once, in the list at the bottom; the source list, the struct and the
//! loading order all come from it.

use redis::Script;

mod claim_due;
mod create_trans;
mod kv_put;
mod prune_created;
mod record;
mod register_branch;
mod reset_due;
mod set_aside;
mod transition;

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        /// `(name, source)` of every script, in `lua/`.
        pub const SOURCES: &[(&str, &str)] = &[
            $((stringify!($name), include_str!(concat!("../../../lua/", stringify!($name), ".lua"))),)*
        ];

        /// Every script, ready to call by SHA (`redis::Script` sends
        /// EVALSHA and reloads the script if Redis lost it).
        pub struct Scripts {
            $(
                #[doc = concat!("`lua/", stringify!($name), ".lua`")]
                pub $name: Script,
            )*
        }

        impl Scripts {
            /// Builds every script from its source.
            pub fn new() -> Self {
                Self {
                    $($name: Script::new(include_str!(concat!("../../../lua/", stringify!($name), ".lua"))),)*
                }
            }

            /// `(name, script)` of every script, for loading at start.
            pub fn all(&self) -> Vec<(&'static str, &Script)> {
                vec![$((stringify!($name), &self.$name),)*]
            }
        }
    };
}

scripts!(
    create_trans,
    claim_due,
    record,
    transition,
    prune_created,
    register_branch,
    reset_due,
    kv_put,
    set_aside,
);

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
