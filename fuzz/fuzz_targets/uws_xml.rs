//! Fuzz target: the UWS documents (job, job list, results, parameters, DALI error VOTable)
//! rendered from client-controlled text.
//!
//! The input is decoded as a form-encoded request, as the frontend decodes one: every pair
//! becomes a job parameter, and a few names also fill the other text a client can influence
//! (`RUNID`, `OWNER` as an ingress or token would name the user, `BASE` as forwarded headers
//! shape the public URL, `RESULT` for result names and keys, `ERROR` for an error message,
//! `PHASE`, `TIME` in microseconds). Every document must parse back with quick-xml as
//! well-formed XML 1.0 (legal characters, matching tags, known entities, unique attributes),
//! and give back each text it was handed, illegal characters replaced by U+FFFD, as any
//! conforming parser reads it: after the line-end and attribute-value normalisation of XML 1.0,
//! which the checker applies itself because quick-xml does not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quick_xml::Reader;
use quick_xml::events::Event;
use uws::store::JobSummary;
use uws::{ErrorCode, ExecutionPhase, Job, JobError, JobId, JobResult, timestamp, xml};

const CODES: [ErrorCode; 5] = [
    ErrorCode::Usage,
    ErrorCode::NotFound,
    ErrorCode::NoData,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let base = first("BASE").unwrap_or_else(|| "https://example.org/api/cutout".to_owned());
    let time = first("TIME")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .map_or_else(
            || timestamp::from_micros(1_764_410_400_000_000),
            timestamp::from_micros,
        );
    let phase = first("PHASE")
        .and_then(|p| p.parse::<ExecutionPhase>().ok())
        .unwrap_or(ExecutionPhase::Pending);
    let results: Vec<JobResult> = pairs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("RESULT"))
        .map(|(_, v)| JobResult {
            id: v.clone(),
            key: v.clone(),
            mime_type: v.clone(),
            size: Some(v.len() as u64),
        })
        .collect();
    let urls: Vec<String> = results
        .iter()
        .map(|r| format!("{base}/files/{}", r.key))
        .collect();
    let job = Job {
        id: JobId::parse("0123456789abcdef0123456789abcdef").expect("job id"),
        run_id: first("RUNID"),
        owner: first("OWNER").unwrap_or_else(|| "anonymous".to_owned()),
        phase,
        quote: Some(time),
        creation_time: time,
        start_time: Some(time),
        end_time: None,
        execution_duration: 600,
        destruction: time,
        parameters: pairs.clone(),
        results,
        error: first("ERROR").map(|m| JobError::new(CODES[m.len() % CODES.len()], m)),
        planned_bytes: None,
        progress: None,
    };

    let doc = Document::parse(&xml::job(&job, &urls));
    assert_eq!(
        doc.texts("uws:runId"),
        job.run_id.iter().map(clean).collect::<Vec<_>>()
    );
    assert_eq!(doc.texts("uws:ownerId"), [clean(&job.owner)]);
    assert_eq!(doc.texts("uws:phase"), [phase.as_str()]);
    assert_parameters(&doc, &job);
    assert_eq!(
        doc.attributes("uws:result", "xlink:href"),
        urls.iter().map(clean).collect::<Vec<_>>()
    );
    if let Some(error) = &job.error {
        assert_eq!(doc.texts("uws:message"), [clean(error.labelled())]);
        let votable = Document::parse(&xml::error_votable(error));
        assert_eq!(votable.texts("INFO"), [clean(error.labelled())]);
    }

    assert_parameters(&Document::parse(&xml::parameters(&job)), &job);
    let results = Document::parse(&xml::results(&job, &urls));
    let ids: Vec<String> = job.results.iter().map(|r| clean(&r.id)).collect();
    assert_eq!(results.attributes("uws:result", "id"), ids);
    let types: Vec<String> = job.results.iter().map(|r| clean(&r.mime_type)).collect();
    assert_eq!(results.attributes("uws:result", "mime-type"), types);

    let summaries: Vec<JobSummary> = pairs
        .iter()
        .enumerate()
        .map(|(i, (name, value))| JobSummary {
            id: JobId::parse(&format!("{i:032x}")).expect("job id"),
            run_id: Some(value.clone()),
            owner: name.clone(),
            phase,
            creation_time: time,
        })
        .collect();
    let list = Document::parse(&xml::job_list(&summaries, |id| format!("{base}/jobs/{id}")));
    let hrefs: Vec<String> = summaries
        .iter()
        .map(|s| clean(format!("{base}/jobs/{}", s.id)))
        .collect();
    assert_eq!(list.attributes("uws:jobref", "xlink:href"), hrefs);
    let run_ids: Vec<String> = pairs.iter().map(|(_, v)| clean(v)).collect();
    assert_eq!(list.texts("uws:runId"), run_ids);
    let owners: Vec<String> = pairs.iter().map(|(n, _)| clean(n)).collect();
    assert_eq!(list.texts("uws:ownerId"), owners);
});

fn assert_parameters(doc: &Document, job: &Job) {
    let names: Vec<String> = job.parameters.iter().map(|(n, _)| clean(n)).collect();
    let values: Vec<String> = job.parameters.iter().map(|(_, v)| clean(v)).collect();
    assert_eq!(doc.attributes("uws:parameter", "id"), names);
    assert_eq!(doc.texts("uws:parameter"), values);
}

/// Whether XML 1.0 can carry the character at all.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// The text as a document must give it back: characters XML cannot carry replaced by U+FFFD.
fn clean(text: impl AsRef<str>) -> String {
    text.as_ref()
        .chars()
        .map(|c| if xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// A parsed document: for every element in document order, its name, unescaped attributes and
/// unescaped text.
struct Document {
    elements: Vec<Element>,
}

struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
}

impl Document {
    /// Parses a whole document, panicking on anything that is not well-formed.
    fn parse(doc: &str) -> Document {
        assert!(
            doc.chars().all(xml_char),
            "illegal XML character in {doc:?}"
        );
        let mut reader = Reader::from_str(doc);
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut roots = 0;
        loop {
            let event = reader
                .read_event()
                .unwrap_or_else(|e| panic!("not well-formed: {e}\n{doc}"));
            match event {
                Event::Eof => break,
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if open.is_empty() {
                        roots += 1;
                    }
                    let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8 name");
                    let attributes = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap_or_else(|e| panic!("bad attribute: {e}\n{doc}"));
                            let key = String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8");
                            // XML 1.0 §3.3.3: a parser turns each literal tab, newline and
                            // carriage return of an attribute value into a space; only
                            // character references keep them.
                            let literal = String::from_utf8(a.value.to_vec()).expect("utf-8");
                            let normalized = literal
                                .replace("\r\n", " ")
                                .replace(['\t', '\n', '\r'], " ");
                            let value = quick_xml::escape::unescape(&normalized)
                                .unwrap_or_else(|e| panic!("bad attribute value: {e}\n{doc}"));
                            (key, value.into_owned())
                        })
                        .collect();
                    elements.push(Element {
                        name,
                        attributes,
                        text: String::new(),
                    });
                    if matches!(event, Event::Start(_)) {
                        open.push(elements.len() - 1);
                    }
                }
                Event::End(_) => {
                    open.pop().expect("end tag matches a start tag");
                }
                Event::Text(t) => {
                    // XML 1.0 §2.11: a parser reads each literal CR LF or lone CR as LF; only
                    // a character reference keeps a carriage return.
                    let text = t
                        .decode()
                        .expect("decode")
                        .replace("\r\n", "\n")
                        .replace('\r', "\n");
                    match open.last() {
                        Some(&i) => elements[i].text.push_str(&text),
                        None => assert!(text.trim().is_empty(), "text outside the root: {doc}"),
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = if r.is_char_ref() {
                        r.resolve_char_ref()
                            .unwrap_or_else(|e| panic!("bad character reference: {e}\n{doc}"))
                            .expect("a character reference")
                            .to_string()
                    } else {
                        let name = r.decode().expect("decode");
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .unwrap_or_else(|| panic!("unknown entity &{name};\n{doc}"))
                            .to_owned()
                    };
                    let &i = open.last().expect("reference inside an element");
                    elements[i].text.push_str(&resolved);
                }
                Event::CData(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                    panic!("unexpected markup in {doc}")
                }
                Event::Decl(_) => {}
            }
        }
        assert!(open.is_empty(), "unclosed elements in {doc}");
        assert_eq!(roots, 1, "one root element in {doc}");
        Document { elements }
    }

    /// The text of every element of that name, in document order.
    fn texts(&self, name: &str) -> Vec<String> {
        self.elements
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.text.clone())
            .collect()
    }

    /// The value of the attribute on every element of that name that has it.
    fn attributes(&self, name: &str, attribute: &str) -> Vec<String> {
        self.elements
            .iter()
            .filter(|e| e.name == name)
            .filter_map(|e| {
                e.attributes
                    .iter()
                    .find(|(k, _)| k == attribute)
                    .map(|(_, v)| v.clone())
            })
            .collect()
    }
}
