//! Retrying an OTLP export through a backend outage, as the OpenTelemetry Collector's
//! exporters do: a batch that fails for a passing reason (the backend down, restarting,
//! overloaded or slow) is tried again with exponential backoff until it goes through or its
//! retry budget (`--otlp-retry-max-secs`, 300 s by default, the Collector's
//! `max_elapsed_time`) is spent. While it waits, new spans wait in the bounded queue in front
//! of the export thread; what does not fit there is dropped and counted, so an outage costs
//! memory up to the queue and never blocks the pipeline.
//!
//! A failure that retrying cannot fix (the backend refused the data: 400, 401, 403, 404, 413;
//! gRPC `InvalidArgument`, `Unauthenticated`, `PermissionDenied`, `Unimplemented`; or the TLS
//! handshake failed on a certificate: one the agent does not trust, or the backend's refusal of
//! the agent's own) drops the batch at once, and the log says what to check. A certificate
//! problem is a configuration problem: it stays until someone changes a file, and retrying it
//! for minutes would only hold the queue. Closing the agent gives the batches still failing `CLOSE_GRACE` in all, so a
//! stop never hangs on a dead backend.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

// Tokio's clock: the tests run on paused time.
use tokio::time::Instant;

/// How long a batch may be retried, by default.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// The first wait after a failure, and the longest (the wait doubles up to it).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Once the agent is closing: how long every batch still failing may take, together.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the log says after a certificate failure.
pub const TLS_HINT: &str = "not retried: the TLS handshake failed on a certificate, which retrying does not fix; check the backend's CA (--otlp-certificate) and the client certificate and key (--otlp-client-certificate, --otlp-client-key, or their OTEL_EXPORTER_OTLP_* variables)";
/// What the log says after the backend refused the credentials.
pub const CREDENTIALS_HINT: &str = "not retried: the backend refused the credentials; check the headers (--otlp-headers, OTEL_EXPORTER_OTLP_HEADERS) and the client certificate";

/// What kind of export failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It may go away by itself (the backend down, restarting, overloaded, slow): retried.
    Passing,
    /// The backend refused the data: not retried.
    Refused,
    /// The backend refused the credentials (401, 403, `Unauthenticated`, `PermissionDenied`).
    Credentials,
    /// The TLS handshake failed on a certificate, either side's.
    Tls,
}

/// Judge an export error from the exporter's message (`HTTP export failed with status code:
/// 503`, `... export failed with gRPC code: Unavailable: transport error: ...`, `HTTP export
/// failed: network error (...)` with the cause `http_client` adds, a timeout).
#[must_use]
pub fn classify(error: &str) -> Failure {
    if let Some(code) = after(error, "status code: ") {
        let code: u16 = code
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        return match code {
            408 | 429 | 502 | 503 | 504 => Failure::Passing,
            401 | 403 => Failure::Credentials,
            _ => Failure::Refused,
        };
    }
    // Before the gRPC codes: tonic reports a failed handshake as `Unavailable`.
    if certificate_problem(error) {
        return Failure::Tls;
    }
    if let Some(code) = after(error, "gRPC code: ") {
        if ["Unauthenticated", "PermissionDenied"]
            .iter()
            .any(|name| code.starts_with(name))
        {
            return Failure::Credentials;
        }
        let passing = [
            "Unavailable",
            "DeadlineExceeded",
            "ResourceExhausted",
            "Aborted",
            "Cancelled",
            "OutOfRange",
            "DataLoss",
            "Unknown",
        ]
        .iter()
        .any(|name| code.starts_with(name));
        return if passing {
            Failure::Passing
        } else {
            Failure::Refused
        };
    }
    // A request that cannot be built or is too large fails the same way every time.
    if error.contains("Failed to build") || error.contains("too large") {
        Failure::Refused
    } else {
        Failure::Passing
    }
}

/// Whether an export error may go away by itself.
#[must_use]
pub fn retryable(error: &str) -> bool {
    classify(error) == Failure::Passing
}

/// A TLS failure about a certificate, in rustls's words: the agent's check of the backend's
/// (`invalid peer certificate: UnknownIssuer`, a name mismatch, expiry), or the backend's alert
/// about the agent's (`received fatal alert: CertificateRequired`, `BadCertificate`,
/// `UnknownCA`, ...). A handshake cut short (`tls handshake eof`, a reset) is not one: a backend
/// going down mid-handshake looks the same.
fn certificate_problem(error: &str) -> bool {
    if error.contains("invalid peer certificate") {
        return true;
    }
    after(error, "received fatal alert: ").is_some_and(|alert| {
        [
            "CertificateRequired",
            "BadCertificate",
            "UnsupportedCertificate",
            "CertificateRevoked",
            "CertificateExpired",
            "CertificateUnknown",
            "UnknownCA",
            "AccessDenied",
            "HandshakeFailure",
        ]
        .iter()
        .any(|name| alert.starts_with(name))
    })
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|at| &text[at + marker.len()..])
}

/// The agent is closing: set by the sink, read by the export thread, which then gives every
/// batch still failing `CLOSE_GRACE` in all.
#[derive(Debug, Default)]
pub struct Closing {
    flag: AtomicBool,
}

impl Closing {
    pub fn start(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// The export thread's retry state across batches.
#[derive(Debug)]
pub struct Retrier {
    /// The exporter's name in the log (`otlp`, `zipkin`).
    label: &'static str,
    max: Duration,
    closing: Arc<Closing>,
    /// When this thread first saw `closing`: the grace period counts from there.
    close_seen: Option<Instant>,
    /// When the current outage began (a try failed, none has succeeded since).
    outage_since: Option<Instant>,
    /// A certificate failure was the last word from the backend (no export has gone through
    /// since): see `judge`.
    certificate_failing: bool,
}

/// Why a batch was given up.
#[derive(Debug, thiserror::Error)]
#[error("{last} (after {tries} tries{})", reason(*kind))]
pub struct GaveUp {
    /// The last try's error.
    pub last: String,
    pub tries: u32,
    /// What kind of failure the last was: all but `Passing` are not retried.
    pub kind: Failure,
}

/// What the log adds to a given-up batch's error.
fn reason(kind: Failure) -> String {
    match kind {
        Failure::Passing => String::new(),
        Failure::Refused => "; not retried: the backend refused it".to_owned(),
        Failure::Credentials => format!("; {CREDENTIALS_HINT}"),
        Failure::Tls => format!("; {TLS_HINT}"),
    }
}

impl Retrier {
    #[must_use]
    pub fn new(max: Duration, closing: Arc<Closing>) -> Self {
        Self {
            label: "otlp",
            max,
            closing,
            close_seen: None,
            outage_since: None,
            certificate_failing: false,
        }
    }

    /// The same, naming another exporter in its log lines.
    #[must_use]
    pub fn labelled(self, label: &'static str) -> Self {
        Self { label, ..self }
    }

    /// A try failed: say so once per outage, with what the agent does about it.
    fn failed(&mut self, error: &str) {
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            eprintln!(
                "wirespan: {} export failing ({error}); retrying for up to {} s per batch while new spans wait in the queue",
                self.label,
                self.max.as_secs()
            );
        }
    }

    /// What kind of failure `error` is, in the light of the ones before. A backend that refuses
    /// the agent's certificate says so in a TLS alert, but only on the connection where the
    /// alert arrives before anything else breaks: the next connections often end with a broken
    /// pipe or a reset instead. Until an export goes through again, such a transport failure is
    /// the same certificate problem, and is not retried either.
    fn judge(&mut self, error: String) -> (String, Failure) {
        let kind = classify(&error);
        let transport = error.contains("network error") || error.contains("transport error");
        match kind {
            Failure::Tls => {
                self.certificate_failing = true;
                (error, kind)
            }
            Failure::Passing if self.certificate_failing && transport => (
                format!("{error} (after the TLS handshake failed on a certificate)"),
                Failure::Tls,
            ),
            _ => (error, kind),
        }
    }

    /// A try succeeded: an outage, if there was one, is over.
    fn succeeded(&mut self) {
        self.certificate_failing = false;
        if let Some(since) = self.outage_since.take() {
            eprintln!(
                "wirespan: {} export recovered after {:.1} s",
                self.label,
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// The latest instant at which a batch that started at `start` may still be tried.
    fn give_up_at(&mut self, start: Instant) -> Instant {
        let budget = start + self.max;
        if self.closing.is_set() {
            let seen = *self.close_seen.get_or_insert_with(Instant::now);
            budget.min(seen + CLOSE_GRACE)
        } else {
            budget
        }
    }

    /// Whether the close grace period is over: batches are then dropped untried.
    pub fn out_of_time(&mut self) -> bool {
        let now = Instant::now();
        self.closing.is_set() && self.give_up_at(now) <= now
    }

    /// Run `attempt` until it succeeds, fails for good, or the batch's time is up.
    pub async fn run<F, Fut, E>(&mut self, attempt: F) -> Result<(), GaveUp>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let last = match attempt().await {
                Ok(()) => {
                    self.succeeded();
                    return Ok(());
                }
                Err(e) => e.to_string(),
            };
            let (last, kind) = self.judge(last);
            let permanent = kind != Failure::Passing;
            if !permanent {
                self.failed(&last);
            }
            let wake = Instant::now() + backoff;
            if permanent || wake > self.give_up_at(start) {
                return Err(GaveUp { last, tries, kind });
            }
            // Sleep in short steps: closing shortens the budget while we wait.
            while Instant::now() < wake && Instant::now() < self.give_up_at(start) {
                tokio::time::sleep(Duration::from_millis(100).min(backoff)).await;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn passing_failures_are_retried_and_refusals_are_not() {
        for text in [
            "HTTP export failed: network error",
            "HTTP export failed with status code: 503",
            "HTTP export failed with status code: 429",
            "TonicTracesClient export failed with gRPC code: Unavailable: transport error",
            "TonicTracesClient export failed with gRPC code: DeadlineExceeded",
            "operation timed out",
        ] {
            assert!(retryable(text), "{text}");
        }
        for text in [
            "HTTP export failed with status code: 400",
            "HTTP export failed with status code: 401",
            "HTTP export failed with status code: 413",
            "TonicTracesClient export failed with gRPC code: Unauthenticated",
            "TonicTracesClient export failed with gRPC code: InvalidArgument",
            "Failed to build HTTP request: bad header",
        ] {
            assert!(!retryable(text), "{text}");
        }
        assert_eq!(
            classify("HTTP export failed with status code: 401"),
            Failure::Credentials
        );
        assert_eq!(
            classify("TonicTracesClient export failed with gRPC code: Unauthenticated"),
            Failure::Credentials
        );
    }

    #[test]
    fn certificate_failures_are_not_retried_and_cut_handshakes_are() {
        for text in [
            "TonicTracesClient export failed with gRPC code: Unavailable: transport error: invalid peer certificate: UnknownIssuer",
            "HTTP export failed: network error (error sending request for url (https://127.0.0.1:4318/v1/traces): client error (SendRequest): connection error: received fatal alert: CertificateRequired)",
            "HTTP export failed: network error (client error (Connect): received fatal alert: UnknownCA)",
            "HTTP export failed: network error (invalid peer certificate: certificate not valid for name \"example.com\")",
        ] {
            assert_eq!(classify(text), Failure::Tls, "{text}");
            let gave_up = GaveUp {
                last: text.into(),
                tries: 1,
                kind: Failure::Tls,
            };
            assert!(gave_up.to_string().contains("--otlp-certificate"));
        }
        let broken = [
            "TonicTracesClient export failed with gRPC code: Unavailable: transport error: tls handshake eof",
            "TonicTracesClient export failed with gRPC code: Unknown: transport error: connection error: stream closed because of a broken pipe",
            "HTTP export failed: network error (client error (Connect): Connection reset by peer (os error 104))",
        ];
        for text in broken {
            assert_eq!(classify(text), Failure::Passing, "{text}");
        }
        // After a certificate failure, until an export goes through, a broken connection is the
        // same problem; a 503 is not.
        let mut retrier = Retrier::new(Duration::from_secs(300), Arc::default());
        let judge = |r: &mut Retrier, text: &str| r.judge(text.to_owned()).1;
        assert_eq!(judge(&mut retrier, broken[1]), Failure::Passing);
        assert_eq!(
            judge(
                &mut retrier,
                "HTTP export failed: network error (received fatal alert: CertificateRequired)"
            ),
            Failure::Tls
        );
        assert_eq!(judge(&mut retrier, broken[1]), Failure::Tls);
        assert_eq!(
            judge(&mut retrier, "HTTP export failed with status code: 503"),
            Failure::Passing
        );
        retrier.succeeded();
        assert_eq!(judge(&mut retrier, broken[2]), Failure::Passing);
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn an_outage_shorter_than_the_budget_is_waited_out() {
        let tries = Cell::new(0);
        let mut retrier = Retrier::new(Duration::from_secs(300), Arc::default());
        let outcome = block_on(retrier.run(|| {
            tries.set(tries.get() + 1);
            let up = tries.get() > 6;
            async move {
                if up {
                    Ok(())
                } else {
                    Err("HTTP export failed: network error")
                }
            }
        }));
        assert!(outcome.is_ok());
        assert!(retrier.outage_since.is_none(), "recovered");
        assert_eq!(tries.get(), 7);
    }

    #[test]
    fn a_refusal_is_tried_once_and_closing_bounds_the_retries() {
        let mut retrier = Retrier::new(Duration::from_secs(300), Arc::default());
        let outcome =
            block_on(retrier.run(|| async { Err("HTTP export failed with status code: 400") }));
        let gave_up = outcome.unwrap_err();
        assert_eq!(gave_up.kind, Failure::Refused);
        assert_eq!(gave_up.tries, 1);

        let closing = Arc::new(Closing::default());
        let mut retrier = Retrier::new(Duration::from_secs(300), Arc::clone(&closing));
        closing.start();
        let (outcome, took, out_of_time) = block_on(async {
            let started = Instant::now();
            let outcome = retrier
                .run(|| async { Err("HTTP export failed: network error") })
                .await;
            let took = started.elapsed();
            tokio::time::sleep(MAX_BACKOFF).await;
            (outcome, took, retrier.out_of_time())
        });
        let gave_up = outcome.unwrap_err();
        assert!(
            gave_up.kind == Failure::Passing && gave_up.tries > 3,
            "{gave_up}"
        );
        // Retried through the grace period, not the 300 s budget.
        assert!(
            took + MAX_BACKOFF > CLOSE_GRACE && took <= CLOSE_GRACE,
            "{took:?}"
        );
        assert!(out_of_time, "later batches are dropped untried");
    }
}
