//! The XML documents a UWS client reads: job, job list, results, parameters, and the DALI error
//! VOTable. Element order follows the `xs:sequence` of `UWS.xsd`, which clients rely on.

use std::fmt::Write;

use quick_xml::escape::escape;

use crate::job::{Job, JobError};
use crate::store::JobSummary;
use crate::timestamp;

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
    x.push_str("\n</uws:job>\n");
    x
}

/// The `uws:jobs` list. `job_url` gives the absolute URL of a job from its ID.
pub fn job_list(jobs: &[JobSummary], job_url: impl Fn(&str) -> String) -> String {
    let mut x = String::with_capacity(256 + 256 * jobs.len());
    x.push_str(DECLARATION);
    let _ = write!(x, "\n<uws:jobs {NAMESPACES} version=\"1.1\">");
    for j in jobs {
        let _ = write!(
            x,
            "\n  <uws:jobref id=\"{}\" xlink:href=\"{}\">\n    <uws:phase>{}</uws:phase>",
            escape(j.id.as_str()),
            escape(job_url(j.id.as_str()).as_str()),
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
            escape(name.as_str()),
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
            escape(result.id.as_str()),
            escape(url.as_str()),
            escape(result.mime_type.as_str())
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
        }
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
    fn job_document_escapes_client_text() {
        let doc = job(&sample(), &["https://h/r?a=1&b=2".into()]);
        assert!(doc.contains("<uws:runId>a&lt;b</uws:runId>"));
        assert!(doc.contains("butler://demo/x&amp;y"));
        assert!(doc.contains("xlink:href=\"https://h/r?a=1&amp;b=2\""));
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
