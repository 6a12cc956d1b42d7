//! End-to-end tests, compiled as one binary (one link, shared helpers in `firn_tests`).

mod access;
mod bad_input;
mod cli;
mod commits;
mod concurrency;
mod connections;
mod crash;
mod faults;
mod maintenance;
mod ops;
mod python;
mod readme;
mod replicas;
mod s3;
mod security;
mod sql;
mod untrusted;
mod warehouses;
