//! The SODA side of job creation: which request parameters make a cutout job, checked before
//! the job exists so that a bad request creates nothing.

use soda::request::CutoutRequest;
use uws::Parameters;
use uws::service::CONTROL_PARAMETERS;

use crate::error::FrontendError;
use crate::state::App;

/// Validates the SODA parameters of a request and returns the parameters to store with the job
/// (everything but the UWS control parameters). Unknown images are refused here with 404.
pub fn job_parameters(app: &App, request: &Parameters) -> Result<Parameters, FrontendError> {
    let parameters = request.without(CONTROL_PARAMETERS);
    let cutout = CutoutRequest::from_parameters(parameters.iter())?;
    for id in &cutout.ids {
        app.repositories.locate(id)?;
    }
    Ok(parameters)
}
