//! Layer 1, AWS SDK plumbing shared by the S3 stage and the Redshift warehouse: which SDK errors may pass on a retry.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Whether an SDK call may succeed if tried again: a timeout, a connection that failed or broke, an unreadable
/// response, or a service error whose code is one of `transient_codes` (throttling, internal errors: each service
/// names its own).
pub(crate) fn transient<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, transient_codes: &[&str]) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => s.err().code().is_some_and(|c| transient_codes.contains(&c)),
        _ => false,
    }
}
