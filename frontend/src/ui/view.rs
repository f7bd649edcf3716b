//! The page's HTML, as maud templates (checked when the crate compiles): the page itself, the
//! cutout form, the outcome of a synchronous cutout, and one row of the job table, which the
//! page's script also fetches alone (`GET /ui/jobs/{id}`) to show a phase change.
//!
//! Every link is absolute from the public base URL, so the page works behind a proxy and under
//! `public_url`. Nothing here is inline script or style (the page's Content-Security-Policy
//! forbids both).

use maud::{DOCTYPE, Markup, html};
use uws::{ExecutionPhase, Job, timestamp};

use super::form::{CutoutForm, Format};
use crate::extract::PublicBase;

/// An image the form offers (from the sky index).
pub struct ImageChoice {
    pub id: String,
    pub collection: String,
    pub size: (u64, u64),
}

/// What the last synchronous cutout gave.
pub enum Outcome {
    /// The preview (an image result) and the FITS cutout, as stable result links.
    Cutout {
        preview: Option<String>,
        fits: Option<String>,
        job: String,
    },
    /// Nothing to cut (the service's 204), with why.
    NoData(String),
    /// The service refused or failed: its DALI message (`UsageError: …`).
    Error(String),
}

/// The whole page.
pub fn page(
    base: &PublicBase,
    images: &[ImageChoice],
    form: &CutoutForm,
    outcome: Option<&Outcome>,
    jobs: &[Job],
    shown: usize,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Skycut: sky cutouts" }
                link rel="stylesheet" href=(base.ui("style.css"));
                script src=(base.ui("app.js")) defer {}
            }
            body data-base=(base.0) {
                a.skip href="#jobs" { "Skip to my jobs" }
                header {
                    h1 { "Skycut" }
                    p {
                        "Cut a piece of the sky out of an image (IVOA SODA). "
                        "Machines use the same service: "
                        a href=(format!("{}/capabilities", base.0)) { "capabilities" }
                        ", "
                        a href=(format!("{}/openapi.json", base.0)) { "OpenAPI" }
                        ", "
                        a href=(base.jobs()) { "UWS job list" }
                        "."
                    }
                }
                main {
                    (cutout_section(base, images, form, outcome))
                    (jobs_section(base, jobs, shown))
                }
            }
        }
    }
}

fn cutout_section(
    base: &PublicBase,
    images: &[ImageChoice],
    form: &CutoutForm,
    outcome: Option<&Outcome>,
) -> Markup {
    html! {
        section aria-labelledby="cutout-heading" {
            h2 #cutout-heading { "Cut out" }
            form #cutout method="post" action=(base.ui("cutout")) {
                div.field {
                    label for="image" { "Image ID" }
                    input #image type="text" name="ID" value=(form.id) list="images"
                        autocomplete="off" spellcheck="false" aria-describedby="image-help";
                    p.help #image-help {
                        "butler://REPOSITORY/NAME. "
                        @if images.is_empty() {
                            "This service has no sky index to choose from. "
                        } @else {
                            "Start typing to choose among " (images.len()) " indexed images. "
                        }
                        "Leave it empty to cut every indexed image covering the position."
                    }
                    @if !images.is_empty() {
                        datalist #images {
                            @for image in images {
                                option value=(image.id) {
                                    (image.collection) ": " (image.size.0) "×" (image.size.1) " pixels"
                                }
                            }
                        }
                    }
                }
                fieldset {
                    legend { "Position (ICRS)" }
                    div.field {
                        label for="ra" { "Right ascension" }
                        input #ra type="text" name="RA" value=(form.ra) required
                            aria-describedby="ra-help";
                        p.help #ra-help { "Degrees (150.025) or hours (10:00:06 or 10h00m06s)." }
                    }
                    div.field {
                        label for="dec" { "Declination" }
                        input #dec type="text" name="DEC" value=(form.dec) required
                            aria-describedby="dec-help";
                        p.help #dec-help { "Degrees (2.2) or degrees, minutes, seconds (+02:12:00)." }
                    }
                    div.field {
                        label for="radius" { "Radius (arcseconds)" }
                        input #radius type="number" name="RADIUS" value=(form.radius) required
                            min="0" step="any";
                    }
                }
                fieldset {
                    legend { "Output" }
                    @for format in Format::ALL {
                        @let id = format!("format-{}", format.name().to_ascii_lowercase());
                        span.choice {
                            input id=(id) type="radio" name="FORMAT" value=(format.name())
                                checked[form.format == format];
                            label for=(id) { (format.name()) }
                        }
                    }
                    p.help { "FITS is always made; PNG and JPEG add a preview image." }
                    span.choice {
                        input #mask type="checkbox" name="MASK" value="true" checked[form.mask];
                        label for="mask" { "MASK: blank the pixels outside the circle" }
                    }
                }
                fieldset {
                    legend { "As a job" }
                    div.field {
                        label for="runid" { "Run ID (optional)" }
                        input #runid type="text" name="RUNID" value=(form.run_id);
                    }
                    span.choice {
                        input #run type="checkbox" name="RUN" value="true" checked[form.run];
                        label for="run" { "Start at once (else it waits for its Run button)" }
                    }
                }
                div.buttons {
                    button type="submit" name="MODE" value="sync" { "Cut now" }
                    button type="submit" name="MODE" value="async" { "Submit as a job" }
                }
            }
            @if let Some(outcome) = outcome {
                (outcome_view(outcome))
            }
        }
    }
}

fn outcome_view(outcome: &Outcome) -> Markup {
    html! {
        section #result aria-labelledby="result-heading" aria-live="polite" {
            h3 #result-heading tabindex="-1" { "Result" }
            @match outcome {
                Outcome::Cutout { preview, fits, job } => {
                    figure {
                        @if let Some(preview) = preview {
                            img #preview src=(preview) alt=(format!("Preview of the cutout (job {job})"));
                        }
                        figcaption {
                            span #preview-size {}
                            @if let Some(fits) = fits {
                                " "
                                a #fits-link href=(fits) download { "Download the FITS cutout" }
                            }
                        }
                    }
                }
                Outcome::NoData(why) => {
                    p.notice role="status" { "No data: " (why) }
                }
                Outcome::Error(message) => {
                    p.error #error role="alert" { (message) }
                }
            }
        }
    }
}

fn jobs_section(base: &PublicBase, jobs: &[Job], shown: usize) -> Markup {
    html! {
        section #jobs aria-labelledby="jobs-heading" {
            h2 #jobs-heading { "My jobs" }
            p.help {
                "The newest " (shown) " jobs; the page follows their phases while it is open. "
                a href=(base.jobs()) { "All jobs (UWS)" }
            }
            p #live role="status" {}
            table {
                thead {
                    tr {
                        th scope="col" { "Job" }
                        th scope="col" { "Phase" }
                        th scope="col" { "Created" }
                        th scope="col" { "Run ID" }
                        th scope="col" { "Parameters" }
                        th scope="col" { "Results" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody #job-rows {
                    @for job in jobs {
                        (job_row(base, job))
                    }
                }
            }
            @if jobs.is_empty() {
                p #no-jobs { "No jobs yet." }
            }
        }
    }
}

/// The stamps a bulk job has cut, of how many, as it last reported.
fn stamps_done(job: &Job) -> Option<(u64, u64)> {
    let stamps = job
        .progress
        .as_ref()?
        .0
        .iter()
        .find(|c| c.name == "stamps")?;
    Some((stamps.done, stamps.total))
}

/// One job's row; its ID is `job-{id}`, as the page's script finds it.
pub fn job_row(base: &PublicBase, job: &Job) -> Markup {
    let id = job.id.as_str();
    let short = id.get(..8).unwrap_or(id);
    let running = matches!(
        job.phase,
        ExecutionPhase::Queued | ExecutionPhase::Executing
    );
    html! {
        tr id=(format!("job-{id}")) data-phase=(job.phase.to_string()) {
            td { a href=(base.job(id)) title=(id) { code { (short) } } }
            td {
                span.phase data-phase=(job.phase.to_string()) { (job.phase.to_string()) }
                @if running {
                    // A bulk job reports its stamps done; any other job moves without a count,
                    // which an indeterminate bar says.
                    @match stamps_done(job) {
                        Some((done, total)) => {
                            progress value=(done) max=(total.max(1))
                                aria-label=(format!("Job {short}: {done} of {total} stamps")) {}
                        }
                        None => {
                            progress aria-label=(format!("Job {short} is {}", job.phase)) {}
                        }
                    }
                }
            }
            td { time datetime=(timestamp::format(job.creation_time)) { (timestamp::format(job.creation_time)) } }
            td { (job.run_id.as_deref().unwrap_or("")) }
            td {
                ul.parameters {
                    @for (name, value) in &job.parameters {
                        li { code { (name) "=" (value) } }
                    }
                }
            }
            td {
                @if let Some(error) = &job.error {
                    p.error { (error.labelled()) }
                }
                ul.results {
                    @for result in &job.results {
                        li {
                            a href=(format!("{}/results/{}", base.job(id), result.id)) {
                                (result.id) " (" (result.mime_type) ")"
                            }
                        }
                    }
                }
            }
            td.actions {
                @if job.phase == ExecutionPhase::Pending {
                    (action(base, id, short, "RUN", "Run"))
                }
                @if running {
                    (action(base, id, short, "ABORT", "Abort"))
                }
                (action(base, id, short, "DELETE", "Delete"))
            }
        }
    }
}

fn action(base: &PublicBase, id: &str, short: &str, action: &str, label: &str) -> Markup {
    html! {
        form.action method="post" action=(base.ui(&format!("jobs/{id}"))) data-job=(id) {
            input type="hidden" name="ACTION" value=(action);
            button type="submit" aria-label=(format!("{label} job {short}")) { (label) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phase: ExecutionPhase, progress: Option<uws::Progress>) -> Job {
        Job {
            progress,
            ..uws::testing::job_in(phase)
        }
    }

    #[test]
    fn a_running_bulk_job_s_bar_shows_its_stamps_done_and_others_a_busy_bar() {
        let base = PublicBase("https://example.org/api/cutout".to_owned());
        let count = |name: &str, done, total| uws::ProgressCount {
            name: name.to_owned(),
            done,
            total,
        };
        let bulk = uws::Progress(vec![count("images", 1, 4), count("stamps", 250, 1000)]);
        let row = job_row(&base, &job(ExecutionPhase::Executing, Some(bulk))).into_string();
        assert!(
            row.contains(
                r#"<progress value="250" max="1000" aria-label="Job 01234567: 250 of 1000 stamps">"#
            ),
            "{row}"
        );
        let row = job_row(&base, &job(ExecutionPhase::Queued, None)).into_string();
        assert!(
            row.contains(r#"<progress aria-label="Job 01234567 is QUEUED">"#),
            "{row}"
        );
        let row = job_row(&base, &job(ExecutionPhase::Completed, None)).into_string();
        assert!(!row.contains("<progress"), "{row}");
    }
}
