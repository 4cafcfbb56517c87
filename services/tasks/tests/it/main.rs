//! Integration tests of the tasks service over real gRPC, against the Postgres, Redis and
//! RabbitMQ that `cargo xtask test` starts; `rest` drives the same flows through the gateway.

mod access;
mod automations;
mod boards;
mod checklists;
mod collab;
mod common;
mod dependencies;
mod entities;
mod moves;
mod overdue;
mod recurrence;
mod rest;
mod rls;
mod search;
mod tasks;
mod time;
mod trash;
mod views;
