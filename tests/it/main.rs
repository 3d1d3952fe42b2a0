//! Integration tests: every test starts its own `redis-server`, real dtx
//! replicas and real HTTP branch services.

#![allow(unreachable_pub)]

mod api;
mod cluster;
mod console;
mod deployment;
mod dtmcli;
mod durability;
mod etcd;
mod faults;
mod grpc;
mod grpc_branches;
mod hardening;
mod health_and_metrics;
mod jsonrpc;
mod links;
mod lua;
mod msg;
mod operator_routes;
mod properties;
mod replicas;
mod replication;
mod saga;
mod scheduler;
mod security;
mod sentinel;
mod sharing;
mod structure;
mod support;
mod tls;
mod topics;
mod tracing;
mod two_phase;
mod workflow;
