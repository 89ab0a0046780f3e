//! Integration tests: the real server on port 0, a real SQLite file, the sandbox for TikTok and
//! the upstream panel, and the worker driven one step at a time.

mod support;

mod admin;
mod api_errors;
mod clients;
mod cluster;
mod crash;
mod dripfeed;
mod encodings;
mod links;
mod money;
mod orders;
mod plans;
mod reader;
mod refill;
mod worker;
