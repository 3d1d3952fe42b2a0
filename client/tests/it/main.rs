//! Integration tests of dtx-client against a real dtx process, real
//! PostgreSQL, MariaDB and Redis, and real HTTP branch services.

#![allow(unreachable_pub)]

mod barrier;
mod examples;
mod gozero;
mod grpc_trans;
mod support;
mod trans;
mod workflow;
mod xa;
