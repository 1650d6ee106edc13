//! Layer 1, AWS SDK plumbing shared by the S3 stage, the Redshift warehouse, RDS and Step Functions: which SDK errors
//! may pass on a retry, and the set-up problems (no region, no credentials) said in one line with what to do.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Whether an SDK call may succeed if tried again: a timeout, a connection that failed or broke, an unreadable
/// response, or a service error whose code is one of `transient_codes` (throttling, internal errors: each service
/// names its own).
pub(crate) fn transient<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
    transient_codes: &[&str],
) -> bool {
    if setup_problem(e).is_some() {
        return false;
    }
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => s.err().code().is_some_and(|c| transient_codes.contains(&c)),
        _ => false,
    }
}

/// A call that failed before it left this machine because the SDK is not set up: no region, or no credentials
/// anywhere the default chain looks. No retry mends either, so it is said at once, in one line, with what to do,
/// instead of the SDK's dump of every provider it tried.
pub(crate) fn setup_problem<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> Option<String> {
    let SdkError::DispatchFailure(_) = e else {
        return None;
    };
    let text = aws_smithy_types::error::display::DisplayErrorContext(e).to_string();
    setup_problem_in(&text)
}

/// [`setup_problem`] of an error's text.
pub(crate) fn setup_problem_in(text: &str) -> Option<String> {
    if text.contains("region must be set") || text.contains("No region") {
        Some(
            "no AWS region: set AWS_REGION (or --region), or a region in the profile AWS_PROFILE names (--profile)"
                .into(),
        )
    } else if text.contains("loading credentials")
        || text.contains("no credentials")
        || text.contains("CredentialsNotLoaded")
    {
        Some(
            "no AWS credentials: set AWS_PROFILE (or --profile) to a profile in ~/.aws, or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or run where a role provides them"
                .into(),
        )
    } else {
        None
    }
}

/// An SDK error in one line: the set-up problem, or the error and its causes.
pub(crate) fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    setup_problem(e).unwrap_or_else(|| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_region_or_credentials_is_said_in_one_line() {
        let region = "dispatch failure: other: A region must be set when sending requests to S3. (DispatchFailure(..))";
        assert!(super::setup_problem_in(region).is_some_and(|s| s.contains("AWS_REGION")));
        let creds =
            "dispatch failure: other: an error occurred while loading credentials: failed to load IMDS session token";
        assert!(super::setup_problem_in(creds).is_some_and(|s| s.contains("AWS_PROFILE")));
        assert_eq!(
            super::setup_problem_in("dispatch failure: io: Connection refused"),
            None
        );
    }
}
