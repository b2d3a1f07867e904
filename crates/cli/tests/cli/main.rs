//! End-to-end tests of the `amora` binary: one test binary for the crate.
//! `e2e` needs nothing but the binary; `feast_compat` needs a Python with Feast 0.67
//! (`AMORA_FEAST_PYTHON`), and is skipped without one unless `TEST_INTEGRATION=1`.

mod bigquery;
mod e2e;
mod faults;
mod feast_compat;
mod historical;
mod object_stores;
mod online;
mod pipeline;
mod serve;
mod support;
