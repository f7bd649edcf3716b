//! Fuzz target: a SODA request as the frontend receives it (a form-encoded query string or POST
//! body) through DALI parameter decoding into `soda::request::CutoutRequest`.
//!
//! Any input must give a request or an error, never a panic; an accepted request holds only
//! valid stencils and IDs, within the pair limit, and each stencil and ID prints as DALI text
//! that parses back to the same value (the form the worker and the provenance keywords use).

#![no_main]

use libfuzzer_sys::fuzz_target;
use soda::request::{CutoutRequest, MAX_PAIRS};
use soda::{SourceId, Stencil};
use uws::Parameters;
use uws::service::CONTROL_PARAMETERS;

fuzz_target!(|data: &[u8]| {
    let request: Parameters = form_urlencoded::parse(data)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect::<Vec<_>>()
        .into();
    // What `frontend::cutout::job_parameters` hands the parser.
    let parameters = request.without(CONTROL_PARAMETERS);
    let Ok(cutout) = CutoutRequest::from_parameters(parameters.iter()) else {
        return;
    };
    assert!(!cutout.ids.is_empty() && !cutout.stencils.is_empty());
    assert!(cutout.ids.len() * cutout.stencils.len() <= MAX_PAIRS);
    assert_eq!(
        cutout.pairs().count(),
        cutout.ids.len() * cutout.stencils.len()
    );
    for id in &cutout.ids {
        assert_eq!(SourceId::parse(&id.to_string()).as_ref(), Ok(id), "{id}");
        assert!(!id.image().is_empty() && !id.image().contains('/'), "{id}");
    }
    for stencil in &cutout.stencils {
        check_stencil(stencil);
        let text = stencil.to_string();
        // A pixel section writes itself as `SUB [...]`, the rest as a POS value.
        let parsed = if let Some(section) = text.strip_prefix("SUB ") {
            Stencil::parse_sub(section)
        } else if let Some(moc) = text.strip_prefix("MOC ") {
            Stencil::parse_moc(moc)
        } else {
            Stencil::parse_pos(&text)
        };
        assert_eq!(parsed.as_ref(), Ok(stencil), "{text:?} does not parse back");
    }
    for (lo, hi) in [cutout.band, cutout.time].into_iter().flatten() {
        assert!(lo <= hi && lo != f64::INFINITY && hi != f64::NEG_INFINITY);
    }
    assert!(cutout.pol.iter().all(|c| (-8..=4).contains(c) && *c != 0));
});

fn on_sky(ra: f64, dec: f64) -> bool {
    (0.0..=360.0).contains(&ra) && (-90.0..=90.0).contains(&dec)
}

fn check_stencil(stencil: &Stencil) {
    match stencil {
        Stencil::Circle(c) => {
            let (ra, dec) = c.center();
            assert!(on_sky(ra, dec), "{stencil:?}");
            assert!(c.radius() > 0.0 && c.radius() <= 180.0, "{stencil:?}");
        }
        Stencil::Polygon(p) => {
            assert!(
                (3..=soda::MAX_POLYGON_VERTICES).contains(&p.vertices().len()),
                "{stencil:?}"
            );
            assert!(
                p.vertices().iter().all(|&(ra, dec)| on_sky(ra, dec)),
                "{stencil:?}"
            );
        }
        Stencil::Range(r) => {
            let (ra, dec) = (r.ra(), r.dec());
            for x in [ra.0, ra.1] {
                assert!(!x.is_finite() || (0.0..=360.0).contains(&x), "{stencil:?}");
            }
            for x in [dec.0, dec.1] {
                assert!(!x.is_finite() || (-90.0..=90.0).contains(&x), "{stencil:?}");
            }
            assert!(
                !ra.0.is_nan() && !ra.1.is_nan() && dec.0 <= dec.1,
                "{stencil:?}"
            );
        }
        // Its ranges are checked by parsing: 1-based, increasing, steps of 1.
        Stencil::Pixels(_) => {}
        Stencil::Moc(moc) => {
            let cells = moc.cells().count();
            assert!((1..=soda::MAX_MOC_CELLS).contains(&cells), "{stencil:?}");
        }
    }
}
