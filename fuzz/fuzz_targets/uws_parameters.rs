//! Fuzz target: the UWS control parameters of a request (a form-encoded query string or POST
//! body) through every pure parser of `uws`: job creation (`PHASE`, `RUNID`,
//! `EXECUTIONDURATION`, `DESTRUCTION`), the job-list filters (`PHASE`, `AFTER`, `LAST`),
//! `WAIT`, instants and job-list cursors.
//!
//! Any input must give a value or a `UwsError`, never a panic, and every accepted value must
//! respect the limits it was parsed under.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use uws::Parameters;
use uws::service::{CONTROL_PARAMETERS, JobLimits, MAX_RUN_ID_LEN};
use uws::store::{JobFilter, ListCursor};
use uws::timestamp;

fuzz_target!(|data: &[u8]| {
    let request: Parameters = form_urlencoded::parse(data)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect::<Vec<_>>()
        .into();
    // A fixed instant keeps every run reproducible: 2025-11-29T10:00:00Z.
    let now = timestamp::from_micros(1_764_410_400_000_000);
    let unlimited = JobLimits {
        default_execution_duration: 0,
        max_execution_duration: 0,
        default_lifetime: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(u32::MAX.into()),
        max_wait: Duration::from_secs(1),
        fair_share_queued: 0,
        create_retry: Duration::from_secs(1),
        result_lifetime: None,
    };
    for limits in [JobLimits::default(), unlimited] {
        if let Ok(creation) = limits.creation(&request, now) {
            assert!(creation.destruction <= now + limits.max_lifetime);
            let max = limits.max_execution_duration;
            assert!(max == 0 || (1..=max).contains(&creation.execution_duration));
            assert!(creation.run_id.is_none_or(|r| r.len() <= MAX_RUN_ID_LEN));
            let phase = request.first("PHASE");
            assert_eq!(creation.run, phase.is_some(), "{phase:?}");
        }
        for wait in request.all("WAIT") {
            if let Ok(timeout) = limits.wait_timeout(wait) {
                assert!(timeout <= limits.max_wait, "WAIT={wait:?}");
            }
        }
    }
    if let Ok(filter) = JobFilter::from_parameters(&request) {
        assert_eq!(filter.phases.len(), request.all("PHASE").count());
    }
    let rest = request.without(CONTROL_PARAMETERS);
    assert!(rest.iter().all(|(name, _)| {
        !CONTROL_PARAMETERS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    }));
    for (_, value) in request.iter() {
        if let Ok(cursor) = ListCursor::parse(value) {
            assert_eq!(ListCursor::parse(&cursor.token()).ok(), Some(cursor));
        }
        if let Ok(t) = timestamp::parse(value) {
            // What the service writes it parses back, to the millisecond it shows.
            let shown = timestamp::format(t);
            let back = timestamp::parse(&shown).unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert_eq!(timestamp::format(back), shown, "{value:?}");
        }
    }
});
