//! The error a gather returns, and the name of a branch.

use core::fmt;

/// One branch of a [`gather!`](crate::gather): its position and its name.
///
/// The name is the branch's label when it has one (`gather!(a = fetch(1), b = fetch(2))`),
/// and otherwise the branch's own source text, so an error can say which branch it is about
/// without any work from the caller.
///
/// ```
/// # futures::executor::block_on(async {
/// let err = gather::gather!(
///     async { Ok::<u8, &str>(1) },
///     backup = async { Err::<u8, &str>("disk full") },
/// )
/// .unwrap_err();
/// let gather::Error::Failed { branch, .. } = &err else { unreachable!() };
/// assert_eq!(branch.index(), 1);
/// assert_eq!(branch.name(), "backup");
/// # });
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Branch {
    index: usize,
    /// The name, kept by a reference to where `gather!` wrote it: a `Branch` is two words, so
    /// that the list of the branches a failure cancelled is a third smaller.
    name: Name,
}

/// A branch's name as a gather keeps it: a reference to the name `gather!` wrote in static
/// memory, one word where a `&str` is two.
pub(crate) type Name = &'static &'static str;

const _: () = assert!(size_of::<Branch>() == 2 * size_of::<usize>());

impl Branch {
    #[doc(hidden)]
    pub const fn __new(index: usize, name: Name) -> Self {
        Branch { index, name }
    }

    /// The branch's position, counted from 0 in the order the branches are written.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The branch's label, or else its source text as written in the macro call.
    ///
    /// Source text is kept exactly within a line; a line break and the indentation after it
    /// read as one space.
    pub fn name(&self) -> &str {
        self.name
    }
}

impl fmt::Debug for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Branch({} `{}`)", self.index, self.name)
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.name)
    }
}

/// Why a [`gather!`](crate::gather) ended without every branch succeeding.
///
/// `E` is the error type every branch shares. Which variant a gather can return depends on its
/// policy:
///
/// | policy | variant |
/// |---|---|
/// | `cancel` | [`Failed`](Error::Failed): the first failure, and the siblings it cancelled |
/// | `finish` | [`Failures`](Error::Failures): every failure, in branch order |
/// | `race_ok` | [`Failures`](Error::Failures): when no branch succeeded, every failure |
/// | `cancel`, `finish`, `race_ok` with `timeout` | [`TimedOut`](Error::TimedOut): the branches the deadline cancelled |
///
/// Reading one:
///
/// ```
/// use gather::{gather, Error};
///
/// async fn upload(name: &str, fail: bool) -> Result<String, String> {
///     if fail { Err(format!("{name} refused")) } else { Ok(name.to_owned()) }
/// }
///
/// # futures::executor::block_on(async {
/// match gather!(upload("a", false), upload("b", true)) {
///     Ok((a, b)) => println!("uploaded {a} and {b}"),
///     Err(Error::Failed { branch, error, cancelled, .. }) => {
///         assert_eq!(branch.name(), r#"upload("b", true)"#);
///         assert_eq!(error, "b refused");
///         // `a` had already finished, so nothing was cancelled.
///         assert!(cancelled.is_empty());
///     }
///     Err(other) => panic!("{other}"),
/// }
/// # });
/// ```
///
/// `Error<E>` is `Send + Sync + 'static` whenever `E` is, and implements
/// [`std::error::Error`] whenever `E` does, so `?` turns it into a
/// `Box<dyn std::error::Error + Send + Sync>`. Where a plain `E` is needed instead,
/// [`into_error`](Error::into_error) gives the branch's own error back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// A branch failed under `policy = cancel`; its running siblings were cancelled.
    #[non_exhaustive]
    Failed {
        /// The branch that failed.
        branch: Branch,
        /// Its error.
        error: E,
        /// The siblings that were still running and were cancelled because of the failure,
        /// in branch order. Siblings that had already finished are not named.
        cancelled: Vec<Branch>,
    },
    /// Every failure, in branch order: under `policy = finish` once all branches have ended,
    /// under `policy = race_ok` when no branch succeeded.
    #[non_exhaustive]
    Failures {
        /// Each failed branch with its error, in branch order.
        errors: Vec<(Branch, E)>,
    },
    /// The `timeout` passed before the gather was done; the branches still running were
    /// cancelled.
    #[non_exhaustive]
    TimedOut {
        /// The branches that were running at the deadline, in branch order.
        pending: Vec<Branch>,
    },
}

impl<E> Error<E> {
    /// The branch's own error: the failure for [`Failed`](Error::Failed), the first in branch
    /// order for [`Failures`](Error::Failures), and `None` for
    /// [`TimedOut`](Error::TimedOut) or an empty `Failures`.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// async fn load() -> Result<u32, std::num::ParseIntError> {
    ///     let (a, b) = gather::gather!(async { "1".parse::<u32>() }, async { "x".parse::<u32>() })
    ///         .map_err(|e| e.into_error().expect("no timeout was set"))?;
    ///     Ok(a + b)
    /// }
    /// assert!(load().await.is_err());
    /// # });
    /// ```
    #[inline]
    pub fn into_error(self) -> Option<E> {
        match self {
            Error::Failed { error, .. } => Some(error),
            Error::Failures { errors } => errors.into_iter().next().map(|(_, e)| e),
            Error::TimedOut { .. } => None,
        }
    }
}

fn write_branches(f: &mut fmt::Formatter<'_>, branches: &[Branch]) -> fmt::Result {
    for (i, b) in branches.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{b}")?;
    }
    Ok(())
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed {
                branch,
                error,
                cancelled,
            } => {
                write!(f, "branch {branch} failed: {error}")?;
                if !cancelled.is_empty() {
                    f.write_str(" (cancelled ")?;
                    write_branches(f, cancelled)?;
                    f.write_str(")")?;
                }
                Ok(())
            }
            Error::Failures { errors } if errors.is_empty() => f.write_str("no branch succeeded"),
            Error::Failures { errors } => {
                let s = if errors.len() == 1 { "" } else { "es" };
                write!(f, "{} branch{s} failed: ", errors.len())?;
                for (i, (branch, error)) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{branch}: {error}")?;
                }
                Ok(())
            }
            Error::TimedOut { pending } => {
                f.write_str("timed out")?;
                if !pending.is_empty() {
                    f.write_str(" (cancelled ")?;
                    write_branches(f, pending)?;
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed { error, .. } => Some(error),
            Error::Failures { errors } => errors.first().map(|(_, e)| e as _),
            Error::TimedOut { .. } => None,
        }
    }
}
