//! One source for every setting's default: the `default_value` of its clap argument.
//!
//! Settings structs are read from flags and environment variables by clap; code that builds
//! them by hand (tests, `CommonSettings::new`) starts from [`defaults`], which parses no
//! arguments with every environment variable ignored. A default is therefore written once,
//! on the argument, and a struct built in code can never disagree with the same struct read
//! from an empty environment.

use clap::builder::Resettable;
use clap::{Args, Command, FromArgMatches};

/// A settings struct with every field at its clap default, whatever the environment says.
///
/// Panics if a field has no default, which is a bug in the struct's definition: the tests of
/// each settings struct call this.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults"))
        .mut_args(|arg| arg.env(Resettable::Reset))
        .no_binary_name(true);
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every setting has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_kit_settings_have_a_default_for_every_field() {
        let http: crate::http::HttpSettings = defaults();
        assert_eq!(http.request_timeout, Duration::from_secs(10));
        let database: crate::db::DatabaseSettings = defaults();
        assert_eq!(database.url, None);
    }
}
