//! Nothing to link: this crate's tests (`tests/compose.rs`) read `docker-compose.yml`,
//! `deploy/Dockerfile`, `deploy/create-topics.sh` and `deploy/postgres-init.sql` and check
//! them against the code, since Docker cannot run where the tests run.
