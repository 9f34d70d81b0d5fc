//! How medic's errors travel as gRPC statuses: one mapping, used by every
//! server, so that agents and `medicctl` can rely on the codes the services
//! document.
//!
//! Denials are not errors: they are a normal `RequestPermit` answer.

use medic_policy::{InvalidInput, PolicyError};
use tonic::{Code, Status};

/// The gRPC code for a refusal of the decision engine.
///
/// | Error | Code |
/// |---|---|
/// | invalid input | `INVALID_ARGUMENT` |
/// | unknown permit, no such pause, host not quarantined, no open breaker, no such override, no such approval | `NOT_FOUND` |
/// | stale fencing token, permit already ended, an outcome its permit's mode does not allow, a reset of a half-open breaker, an override above its ceiling, a decision on an approval no longer pending | `FAILED_PRECONDITION` |
/// | permit held by another host | `PERMISSION_DENIED` |
/// | request id reused for another request, host already quarantined | `ALREADY_EXISTS` |
pub fn policy_error_code(err: &PolicyError) -> Code {
    match err {
        PolicyError::Invalid(_) => Code::InvalidArgument,
        PolicyError::UnknownPermit(_)
        | PolicyError::NoSuchPause(_)
        | PolicyError::NotQuarantined(_)
        | PolicyError::NoOpenBreaker(_)
        | PolicyError::NoSuchOverride(_)
        | PolicyError::NoSuchApproval(_) => Code::NotFound,
        PolicyError::StaleToken { .. }
        | PolicyError::PermitEnded { .. }
        | PolicyError::OutcomeNotForMode { .. }
        | PolicyError::BreakerAlreadyHalfOpen(_)
        | PolicyError::OverrideAboveCeiling { .. }
        | PolicyError::ApprovalNotPending { .. } => Code::FailedPrecondition,
        PolicyError::WrongHost { .. } => Code::PermissionDenied,
        PolicyError::RequestIdConflict { .. } | PolicyError::AlreadyQuarantined(_) => {
            Code::AlreadyExists
        }
    }
}

/// The status for a refusal of the decision engine: the code of
/// [`policy_error_code`] and the error's message, which names what to do.
pub fn policy_error_status(err: &PolicyError) -> Status {
    Status::new(policy_error_code(err), err.to_string())
}

/// The status for invalid wire input: `INVALID_ARGUMENT`, with the message
/// naming the field (`request.action: must be set`).
pub fn invalid_input_status(err: &InvalidInput) -> Status {
    Status::invalid_argument(err.to_string())
}

#[cfg(test)]
mod tests {
    use medic_policy::{FencingToken, HostId, PermitId, PermitState, ScopeSuffix};

    use super::*;

    #[test]
    fn stale_token_is_a_failed_precondition_with_both_tokens_in_the_message() {
        let err = PolicyError::StaleToken {
            id: PermitId::for_token(FencingToken(42)),
            presented: FencingToken(41),
            current: FencingToken(42),
        };
        let status = policy_error_status(&err);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "permit p-000000000042: fencing token 41 is stale (the permit carries 42)"
        );
    }

    #[test]
    fn ended_permit_is_a_failed_precondition() {
        let err = PolicyError::PermitEnded {
            id: PermitId::for_token(FencingToken(1)),
            state: PermitState::Revoked,
        };
        assert_eq!(policy_error_code(&err), Code::FailedPrecondition);
    }

    #[test]
    fn missing_things_are_not_found() {
        let host = HostId::new("web-1").expect("valid");
        for err in [
            PolicyError::UnknownPermit(PermitId::for_token(FencingToken(1))),
            PolicyError::NoSuchPause("id 3".to_owned()),
            PolicyError::NotQuarantined(host),
            PolicyError::NoOpenBreaker(ScopeSuffix(None)),
        ] {
            assert_eq!(policy_error_code(&err), Code::NotFound, "{err}");
        }
    }

    #[test]
    fn another_hosts_permit_is_permission_denied() {
        let err = PolicyError::WrongHost {
            id: PermitId::for_token(FencingToken(1)),
            holder: HostId::new("web-1").expect("valid"),
            caller: HostId::new("web-2").expect("valid"),
        };
        assert_eq!(policy_error_code(&err), Code::PermissionDenied);
    }

    #[test]
    fn invalid_input_is_invalid_argument_naming_the_field() {
        let err = InvalidInput::new("request.action", "must be set");
        let status = invalid_input_status(&err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "request.action: must be set");
        assert_eq!(
            policy_error_status(&PolicyError::Invalid(err)).code(),
            Code::InvalidArgument
        );
    }
}
