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
    fn every_settings_struct_has_a_default_for_every_field() {
        let settings: crate::kafka::KafkaSettings = defaults();
        assert_eq!(settings.fetch_wait_max, Duration::from_millis(10));
        assert_eq!(settings.brokers, "127.0.0.1:9092");
        let relay: crate::outbox::RelaySettings = defaults();
        assert_eq!(relay.lease, Duration::from_secs(15));
        let _: crate::http::HttpSettings = defaults();
        let database: crate::db::DatabaseSettings = defaults();
        assert_eq!(database.url, None);
        let common: crate::app::CommonSettings = defaults();
        assert_eq!(common.kafka.session_timeout, Duration::from_secs(10));
        let retention: crate::housekeeping::RetentionSettings = defaults();
        assert_eq!(retention.processed_event, Duration::from_secs(691_200));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: crate::kafka::KafkaSettings,
    }

    fn kafka(args: &[&str]) -> Result<crate::kafka::KafkaSettings, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("cli").chain(args.iter().copied())).map(|cli| cli.kafka)
    }

    #[test]
    fn a_duration_setting_takes_milliseconds_or_a_unit() {
        let settings = kafka(&["--kafka-session-timeout-ms", "6000"]).unwrap();
        assert_eq!(settings.session_timeout, Duration::from_secs(6));
        let settings = kafka(&["--kafka-session-timeout-ms", "6s"]).unwrap();
        assert_eq!(settings.session_timeout, Duration::from_secs(6));
        let err = kafka(&["--kafka-session-timeout-ms", "soon"]).unwrap_err();
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }
}
