//! playpanel: a panel-API order service for TikTok views that proves delivery by reading the
//! video's public play count before and after a provider delivers.

pub mod admin;
pub mod api;
pub mod app;
pub mod delivery;
pub mod domain;
pub mod keys;
pub mod operator;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod tiktok;
pub mod worker;
