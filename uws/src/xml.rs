//! The XML documents a UWS client reads: job, job list, results, parameters, and the DALI error
//! VOTable. Element order follows the `xs:sequence` of `UWS.xsd`, which clients rely on.

use std::borrow::Cow;
use std::fmt::Write;

use crate::job::{Job, JobError};
use crate::store::JobSummary;
use crate::timestamp;

/// Escapes element text for an XML 1.0 document: markup characters become entity references,
/// a carriage return becomes `&#13;` (a parser reads a literal one as a line feed), and the
/// characters XML 1.0 cannot carry at all (control characters other than tab, newline and
/// carriage return, U+FFFE, U+FFFF) become U+FFFD: a client-sent value holding one must not make
/// the whole document unreadable.
fn escape(text: &str) -> Cow<'_, str> {
    escape_as(text, false)
}

/// Escapes an attribute value: as [`escape`], and tab and newline become character references
/// too, since a parser turns literal ones into spaces (XML 1.0 §3.3.3).
fn escape_attribute(text: &str) -> Cow<'_, str> {
    escape_as(text, true)
}

fn escape_as(text: &str, attribute: bool) -> Cow<'_, str> {
    let legal = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    let plain = |c: char| {
        legal(c)
            && !matches!(c, '<' | '>' | '&' | '"' | '\'' | '\r')
            && !(attribute && matches!(c, '\t' | '\n'))
    };
    if text.chars().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if !legal(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const NAMESPACES: &str = r#"xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;

/// The `uws:job` document. `result_urls` holds the URL of each of `job.results`, in order.
pub fn job(job: &Job, result_urls: &[String]) -> String {
    let mut x = String::with_capacity(2048);
    x.push_str(DECLARATION);
    let _ = write!(x, "\n<uws:job {NAMESPACES} version=\"1.1\">");
    let _ = write!(x, "\n  <uws:jobId>{}</uws:jobId>", escape(job.id.as_str()));
    if let Some(run_id) = &job.run_id {
        let _ = write!(x, "\n  <uws:runId>{}</uws:runId>", escape(run_id.as_str()));
    }
    let _ = write!(
        x,
        "\n  <uws:ownerId>{}</uws:ownerId>",
        escape(job.owner.as_str())
    );
    let _ = write!(x, "\n  <uws:phase>{}</uws:phase>", job.phase);
    optional_time(&mut x, "quote", job.quote);
    let _ = write!(
        x,
        "\n  <uws:creationTime>{}</uws:creationTime>",
        timestamp::format(job.creation_time)
    );
    optional_time(&mut x, "startTime", job.start_time);
    optional_time(&mut x, "endTime", job.end_time);
    let _ = write!(
        x,
        "\n  <uws:executionDuration>{}</uws:executionDuration>",
        job.execution_duration
    );
    let _ = write!(
        x,
        "\n  <uws:destruction>{}</uws:destruction>",
        timestamp::format(job.destruction)
    );
    x.push_str("\n  ");
    parameters_element(&mut x, job, "");
    x.push_str("\n  ");
    results_element(&mut x, job, result_urls, "");
    if let Some(error) = &job.error {
        let _ = write!(
            x,
            "\n  <uws:errorSummary type=\"{}\" hasDetail=\"true\">\n    <uws:message>{}</uws:message>\n  </uws:errorSummary>",
            error.code.error_type().as_str(),
            escape(error.labelled().as_str())
        );
    }
    if let Some(progress) = job.progress.as_ref().filter(|p| !p.0.is_empty()) {
        x.push_str("\n  <uws:jobInfo>");
        for count in &progress.0 {
            let _ = write!(
                x,
                "\n    <progress xmlns=\"{PROGRESS_NS}\" name=\"{}\" done=\"{}\" total=\"{}\"/>",
                escape(&count.name),
                count.done,
                count.total
            );
        }
        x.push_str("\n  </uws:jobInfo>");
    }
    x.push_str("\n</uws:job>\n");
    x
}

/// The namespace of the `progress` elements of a job's `jobInfo` (UWS leaves its content to the
/// service): one element per count, `<progress name="stamps" done="…" total="…"/>`.
pub const PROGRESS_NS: &str = "urn:skycut:progress";

/// The `uws:jobs` list. `job_url` gives the absolute URL of a job from its ID.
pub fn job_list(jobs: &[JobSummary], job_url: impl Fn(&str) -> String) -> String {
    let mut x = String::with_capacity(256 + 256 * jobs.len());
    x.push_str(DECLARATION);
    let _ = write!(x, "\n<uws:jobs {NAMESPACES} version=\"1.1\">");
    for j in jobs {
        let _ = write!(
            x,
            "\n  <uws:jobref id=\"{}\" xlink:href=\"{}\">\n    <uws:phase>{}</uws:phase>",
            escape_attribute(j.id.as_str()),
            escape_attribute(job_url(j.id.as_str()).as_str()),
            j.phase
        );
        if let Some(run_id) = &j.run_id {
            let _ = write!(
                x,
                "\n    <uws:runId>{}</uws:runId>",
                escape(run_id.as_str())
            );
        }
        let _ = write!(
            x,
            "\n    <uws:ownerId>{}</uws:ownerId>\n    <uws:creationTime>{}</uws:creationTime>\n  </uws:jobref>",
            escape(j.owner.as_str()),
            timestamp::format(j.creation_time)
        );
    }
    x.push_str("\n</uws:jobs>\n");
    x
}

/// `document` with an `<?xml-stylesheet?>` instruction after its declaration, naming the XSLT at
/// `href` through which a browser shows it as a page; XML clients (pyvo, STIL) skip processing
/// instructions, and the schemas do not see them.
pub fn with_stylesheet(document: String, href: &str) -> String {
    let Some(rest) = document.strip_prefix(DECLARATION) else {
        return document;
    };
    // Escaped as an attribute value, so `?>` cannot end the instruction early.
    format!(
        "{DECLARATION}\n<?xml-stylesheet type=\"text/xsl\" href=\"{}\"?>{rest}",
        escape_attribute(href)
    )
}

/// The `uws:results` document on its own (`/results`).
pub fn results(job: &Job, result_urls: &[String]) -> String {
    let mut x = String::from(DECLARATION);
    x.push('\n');
    results_element(&mut x, job, result_urls, NAMESPACES);
    x.push('\n');
    x
}

/// The `uws:parameters` document on its own (`/parameters`).
pub fn parameters(job: &Job) -> String {
    let mut x = String::from(DECLARATION);
    x.push('\n');
    parameters_element(&mut x, job, NAMESPACES);
    x.push('\n');
    x
}

/// The DALI error document (a VOTable with `QUERY_STATUS=ERROR`) served at `/error`.
pub fn error_votable(error: &JobError) -> String {
    format!(
        "{DECLARATION}\n<VOTABLE xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\" version=\"1.4\">\n  <RESOURCE type=\"results\">\n    <INFO name=\"QUERY_STATUS\" value=\"ERROR\">{}</INFO>\n  </RESOURCE>\n</VOTABLE>\n",
        escape(error.labelled().as_str())
    )
}

fn optional_time(x: &mut String, name: &str, t: Option<time::OffsetDateTime>) {
    match t {
        Some(t) => {
            let _ = write!(x, "\n  <uws:{name}>{}</uws:{name}>", timestamp::format(t));
        }
        None => {
            let _ = write!(x, "\n  <uws:{name} xsi:nil=\"true\"/>");
        }
    }
}

fn parameters_element(x: &mut String, job: &Job, namespaces: &str) {
    let sep = if namespaces.is_empty() { "" } else { " " };
    let _ = write!(x, "<uws:parameters{sep}{namespaces}>");
    for (name, value) in &job.parameters {
        let _ = write!(
            x,
            "\n    <uws:parameter id=\"{}\">{}</uws:parameter>",
            escape_attribute(name.as_str()),
            escape(value.as_str())
        );
    }
    x.push_str("\n  </uws:parameters>");
}

fn results_element(x: &mut String, job: &Job, result_urls: &[String], namespaces: &str) {
    let sep = if namespaces.is_empty() { "" } else { " " };
    let _ = write!(x, "<uws:results{sep}{namespaces}>");
    for (result, url) in job.results.iter().zip(result_urls) {
        let _ = write!(
            x,
            "\n    <uws:result id=\"{}\" xlink:href=\"{}\" mime-type=\"{}\"",
            escape_attribute(result.id.as_str()),
            escape_attribute(url.as_str()),
            escape_attribute(result.mime_type.as_str())
        );
        if let Some(size) = result.size {
            let _ = write!(x, " size=\"{size}\"");
        }
        x.push_str("/>");
    }
    x.push_str("\n  </uws:results>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ErrorCode, ExecutionPhase, JobId, JobResult};

    fn sample() -> Job {
        let t = timestamp::parse("2026-11-29T10:00:00.25Z").expect("time");
        Job {
            id: JobId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            run_id: Some("a<b".into()),
            owner: "anonymous".into(),
            phase: ExecutionPhase::Error,
            quote: None,
            creation_time: t,
            start_time: Some(t),
            end_time: None,
            execution_duration: 600,
            destruction: t,
            parameters: vec![("ID".into(), "butler://demo/x&y".into())],
            results: vec![JobResult {
                id: "result".into(),
                key: "k".into(),
                mime_type: "application/fits".into(),
                size: Some(2880),
            }],
            error: Some(JobError::new(
                ErrorCode::Usage,
                "CIRCLE radius must be positive",
            )),
            planned_bytes: None,
            progress: None,
        }
    }

    #[test]
    fn stylesheet_instruction_follows_the_declaration_and_cannot_be_closed_early() {
        let doc = with_stylesheet(job(&sample(), &[]), "https://h/ui/uws.xsl?a=1&b=?>");
        let mut lines = doc.lines();
        assert_eq!(lines.next(), Some(DECLARATION));
        assert_eq!(
            lines.next(),
            Some(
                r#"<?xml-stylesheet type="text/xsl" href="https://h/ui/uws.xsl?a=1&amp;b=?&gt;"?>"#
            )
        );
        assert!(lines.next().is_some_and(|l| l.starts_with("<uws:job ")));
        assert_eq!(with_stylesheet("<x/>".into(), "s.xsl"), "<x/>");
    }

    #[test]
    fn job_document_follows_the_schema_sequence() {
        let doc = job(&sample(), &["https://h/r?a=1&b=2".into()]);
        let order = [
            "<uws:jobId>",
            "<uws:runId>",
            "<uws:ownerId>",
            "<uws:phase>",
            "<uws:quote",
            "<uws:creationTime>",
            "<uws:startTime>",
            "<uws:endTime",
            "<uws:executionDuration>",
            "<uws:destruction>",
            "<uws:parameters>",
            "<uws:results>",
            "<uws:errorSummary",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|tag| {
                doc.find(tag)
                    .unwrap_or_else(|| panic!("{tag} missing in {doc}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{doc}");
        assert!(doc.contains("version=\"1.1\""));
        assert!(doc.contains("<uws:endTime xsi:nil=\"true\"/>"));
        assert!(doc.contains("2026-11-29T10:00:00.250Z"));
    }

    #[test]
    fn progress_is_the_last_element_a_job_document_holds_in_job_info() {
        let mut job_with_progress = sample();
        job_with_progress.progress = Some(crate::Progress(vec![crate::ProgressCount {
            name: "stamps".into(),
            done: 12,
            total: 40,
        }]));
        let doc = job(&job_with_progress, &["https://h/r".into()]);
        let info = doc.find("<uws:jobInfo>").expect("jobInfo");
        assert!(
            doc.find("<uws:errorSummary").expect("summary") < info,
            "{doc}"
        );
        assert!(
            doc[info..].starts_with(&format!(
                "<uws:jobInfo>\n    <progress xmlns=\"{PROGRESS_NS}\" name=\"stamps\" done=\"12\" total=\"40\"/>\n  </uws:jobInfo>\n</uws:job>"
            )),
            "{doc}"
        );
        // No report, no jobInfo.
        assert!(!job(&sample(), &[]).contains("jobInfo"));
    }

    #[test]
    fn job_document_escapes_client_text() {
        let doc = job(&sample(), &["https://h/r?a=1&b=2".into()]);
        assert!(doc.contains("<uws:runId>a&lt;b</uws:runId>"));
        assert!(doc.contains("butler://demo/x&amp;y"));
        assert!(doc.contains("xlink:href=\"https://h/r?a=1&amp;b=2\""));
    }

    /// Found by `fuzz/fuzz_targets/uws_xml.rs`: a tab in a parameter name came back as a space,
    /// and a carriage return in a run ID as a line feed, from any conforming XML parser.
    #[test]
    fn whitespace_in_client_text_survives_a_conforming_parser() {
        let mut job = sample();
        job.run_id = Some("a\r\nb\tc".into());
        job.parameters = vec![("X\tY\nZ\r".into(), "1\r\n2\t3".into())];
        let doc = super::job(&job, &["https://h/r\n".into()]);
        assert!(doc.contains("<uws:runId>a&#13;\nb\tc</uws:runId>"), "{doc}");
        assert!(
            doc.contains("<uws:parameter id=\"X&#9;Y&#10;Z&#13;\">1&#13;\n2\t3</uws:parameter>"),
            "{doc}"
        );
        assert!(doc.contains("xlink:href=\"https://h/r&#10;\""), "{doc}");
    }

    #[test]
    fn error_summary_carries_the_dali_label() {
        let doc = job(&sample(), &[]);
        assert!(doc.contains(
            "<uws:errorSummary type=\"fatal\" hasDetail=\"true\">\n    <uws:message>UsageError: CIRCLE radius must be positive</uws:message>"
        ));
        let votable = error_votable(&JobError::new(ErrorCode::Unavailable, "down"));
        assert!(votable.contains("value=\"ERROR\">ServiceUnavailable: down</INFO>"));
    }

    #[test]
    fn job_list_links_each_job() {
        let j = sample();
        let summary = JobSummary {
            id: j.id.clone(),
            run_id: None,
            owner: j.owner.clone(),
            phase: j.phase,
            creation_time: j.creation_time,
        };
        let doc = job_list(&[summary], |id| format!("http://h/jobs/{id}"));
        assert!(doc.contains(
            "<uws:jobref id=\"0123456789abcdef0123456789abcdef\" xlink:href=\"http://h/jobs/0123456789abcdef0123456789abcdef\">"
        ));
        assert!(!doc.contains("runId"));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property-based fuzzing of the rendering of client-controlled text (run ID, parameter
    //! names and values, error messages): every document stays well-formed XML 1.0 and gives
    //! back the text it was handed.

    use proptest::prelude::*;
    use quick_xml::Reader;
    use quick_xml::events::Event;

    use super::*;
    use crate::job::{ErrorCode, ExecutionPhase, JobId};

    fn xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    }

    /// All text content of a document, which must parse without error.
    fn texts(doc: &str) -> Vec<String> {
        assert!(
            doc.chars().all(xml_char),
            "illegal XML character in {doc:?}"
        );
        let mut reader = Reader::from_str(doc);
        let mut out = Vec::new();
        loop {
            match reader.read_event() {
                Ok(Event::Eof) => return out,
                Ok(Event::Text(t)) => out.push(t.decode().expect("decode").into_owned()),
                Ok(Event::GeneralRef(r)) => out.push(format!("&{};", String::from_utf8_lossy(&r))),
                Ok(_) => {}
                Err(e) => panic!("not well-formed: {e}\n{doc}"),
            }
        }
    }

    fn job(run_id: String, name: String, value: String) -> Job {
        let now = crate::timestamp::now();
        Job {
            id: JobId::random(),
            run_id: Some(run_id),
            owner: "alice".into(),
            phase: ExecutionPhase::Pending,
            quote: None,
            creation_time: now,
            start_time: None,
            end_time: None,
            execution_duration: 0,
            destruction: now,
            parameters: vec![(name, value)],
            results: Vec::new(),
            error: None,
            planned_bytes: None,
            progress: None,
        }
    }

    /// Any characters at all: `any::<String>()` leaves out control characters, the very ones
    /// XML 1.0 cannot carry.
    fn raw() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter)
    }

    /// Found by the fuzz below: a NUL in a parameter made every job document unreadable.
    #[test]
    fn control_characters_in_client_text_become_replacement_characters() {
        let job = job("a\u{1}b".into(), "X\0".into(), "v\u{FFFF}".into());
        let doc = super::job(&job, &[]);
        assert!(doc.contains("<uws:runId>a\u{FFFD}b</uws:runId>"), "{doc}");
        assert!(
            doc.contains("id=\"X\u{FFFD}\">v\u{FFFD}</uws:parameter>"),
            "{doc}"
        );
    }

    proptest! {
        #[test]
        fn job_documents_stay_well_formed_whatever_the_client_sent(
            run_id in raw(),
            name in raw(),
            value in raw(),
        ) {
            let job = job(run_id, name, value);
            texts(&super::job(&job, &[]));
            texts(&parameters(&job));
        }

        #[test]
        fn error_documents_stay_well_formed_whatever_the_message(message in raw()) {
            texts(&error_votable(&JobError { code: ErrorCode::Usage, message }));
        }

        #[test]
        fn legal_text_comes_back_unchanged(value in "[ -~\u{a0}-\u{d7ff}]{0,40}") {
            let job = job("r".into(), "CIRCLE".into(), value.clone());
            let joined: String = texts(&parameters(&job)).concat();
            let unescaped = quick_xml::escape::unescape(&joined).expect("unescape").into_owned();
            prop_assert!(unescaped.contains(value.trim()), "{unescaped:?} lacks {value:?}");
        }
    }
}
