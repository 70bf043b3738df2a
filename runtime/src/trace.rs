//! The `tracing` feature: a span for each gather, and under it one span per branch that
//! records how the branch ended. Without the feature every type here is empty and every
//! method does nothing, so that the branch drivers pay nothing for it.

/// How a branch ended, as its span records it in the field `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It finished with a value (under `cancel`, `finish` and `race_ok`: with `Ok`).
    Ok,
    /// It finished with `Err`.
    Error,
    /// The gather stopped it: a sibling failed, or another branch won the race.
    Cancelled,
    /// The gather's deadline stopped it.
    TimedOut,
    /// It panicked (in place), or its task did (under `spawn`).
    Panicked,
}

#[cfg(feature = "tracing")]
impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed out",
            Outcome::Panicked => "panicked",
        }
    }
}

/// The span of one gather.
#[derive(Debug)]
pub struct GatherSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl GatherSpan {
    /// The span of a gather under `policy`.
    #[inline]
    pub fn new(policy: &'static str) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = policy;
        GatherSpan {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!("gather", policy),
        }
    }
}

/// The span of one branch, from its start (its first poll) to its end.
#[derive(Debug)]
pub struct BranchSpan {
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

impl BranchSpan {
    /// A branch that has not started.
    pub const NONE: BranchSpan = BranchSpan {
        #[cfg(feature = "tracing")]
        span: None,
    };

    /// Opens the span when the branch starts; does nothing after that. `name` is only asked
    /// for with the feature on, so that the branch's poll does not look it up otherwise.
    #[inline]
    pub fn start(
        &mut self,
        gather: &GatherSpan,
        index: usize,
        name: impl FnOnce() -> &'static str,
    ) {
        #[cfg(feature = "tracing")]
        if self.span.is_none() {
            self.span = Some(tracing::info_span!(
                parent: &gather.span,
                "branch",
                index,
                branch = name(),
                outcome = tracing::field::Empty,
            ));
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (gather, index, name);
    }

    /// Runs `poll` inside the span; records `Panicked` if it unwinds.
    #[inline]
    pub fn poll<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        {
            struct OnUnwind<'a>(&'a mut BranchSpan);
            impl Drop for OnUnwind<'_> {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        self.0.end(Outcome::Panicked);
                    }
                }
            }
            let span = self.span.clone();
            let entered = span.as_ref().map(tracing::Span::enter);
            let guard = OnUnwind(self);
            let result = poll();
            core::mem::forget(guard);
            drop(entered);
            result
        }
        #[cfg(not(feature = "tracing"))]
        poll()
    }

    /// Records how the branch ended and closes its span. Only the first call counts.
    #[inline]
    pub fn end(&mut self, outcome: Outcome) {
        #[cfg(feature = "tracing")]
        if let Some(span) = self.span.take() {
            span.record("outcome", outcome.as_str());
        }
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }
}
