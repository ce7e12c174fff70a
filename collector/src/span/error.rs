//! Why a call failed, as the `error.type` attribute of the OpenTelemetry semantic conventions
//! names it: a low-cardinality identifier of the failure, set only on failed spans. Transport
//! failures come from the kernel (a failed connect's or a reset's socket error); a response's
//! own error (HTTP 4xx/5xx, a gRPC status) is named by its code instead (see `Span::error_type`).

/// A failure below the protocol: the call got no (complete) response because of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The peer refused the connection (a RST answered the SYN: nothing listens there).
    ConnectionRefused,
    /// No answer in time: the kernel gave up on the connect (ETIMEDOUT), or the program
    /// abandoned a connect still waiting for the SYN-ACK (its dial timeout or deadline), or a
    /// gRPC call ended with DEADLINE_EXCEEDED.
    Timeout,
    /// The connection was reset (RST) before the response came.
    ConnectionReset,
    /// The connection ended, or the call returned, before any response, with no socket error.
    NoResponse,
    /// Another socket error (the errno is not one the conventions name).
    Other,
}

/// errno values (Linux, every architecture wirespan runs on).
const ECONNREFUSED: u32 = 111;
const ETIMEDOUT: u32 = 110;
const ECONNRESET: u32 = 104;
const EPIPE: u32 = 32;
const ECONNABORTED: u32 = 103;
const EHOSTUNREACH: u32 = 113;
const ENETUNREACH: u32 = 101;

impl ErrorType {
    /// The failure a socket error (`sk_err`) stands for.
    #[must_use]
    pub fn from_errno(errno: u32) -> Self {
        match errno {
            ECONNREFUSED => Self::ConnectionRefused,
            ETIMEDOUT | EHOSTUNREACH | ENETUNREACH => Self::Timeout,
            ECONNRESET | EPIPE | ECONNABORTED => Self::ConnectionReset,
            _ => Self::Other,
        }
    }

    /// The `error.type` value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::Timeout => "timeout",
            Self::ConnectionReset => "connection_reset",
            Self::NoResponse => "no_response",
            Self::Other => "_OTHER",
        }
    }

    /// How a status description says it.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection refused",
            Self::Timeout => "timed out",
            Self::ConnectionReset => "connection reset",
            Self::NoResponse => "no response",
            Self::Other => "transport error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_map_to_the_conventions_names() {
        assert_eq!(ErrorType::from_errno(111).as_str(), "connection_refused");
        assert_eq!(ErrorType::from_errno(110).as_str(), "timeout");
        assert_eq!(ErrorType::from_errno(104).as_str(), "connection_reset");
        assert_eq!(ErrorType::from_errno(5).as_str(), "_OTHER");
    }
}
