//! `gather::Error` and `gather::Branch`: which branch failed, how it reads, and how it travels
//! through `?`.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use gather::{Branch, Error, gather};
use tokio::time::sleep;

async fn fail_after<T>(ms: u64, error: &'static str) -> Result<T, &'static str> {
    sleep(Duration::from_millis(ms)).await;
    Err(error)
}

async fn ok_after<T>(ms: u64, value: T) -> Result<T, &'static str> {
    sleep(Duration::from_millis(ms)).await;
    Ok(value)
}

fn io_error(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, msg.to_owned())
}

/// The error of a `cancel` gather where `backup` fails and `primary` and the third branch are
/// cancelled.
async fn failed_backup() -> Error<&'static str> {
    gather!(
        primary = ok_after(100, 1_u8),
        backup = fail_after::<u8>(10, "disk full"),
        ok_after(100, 3_u8),
    )
    .expect_err("backup fails")
}

/// The error of a `finish` gather where the first and third branches fail.
async fn two_failures() -> Error<&'static str> {
    gather!(policy = finish;
        fail_after::<u8>(10, "first"),
        ok_after(10, 2_u8),
        third = fail_after::<u8>(20, "third"),
    )
    .expect_err("two branches fail")
}

#[tokio::test(start_paused = true)]
async fn a_label_names_its_branch_and_index_counts_from_zero() {
    let Error::Failed {
        branch, cancelled, ..
    } = failed_backup().await
    else {
        panic!("expected Error::Failed");
    };
    assert_eq!(branch.index(), 1);
    assert_eq!(branch.name(), "backup");
    assert_eq!(cancelled[0].index(), 0);
    assert_eq!(cancelled[0].name(), "primary");
}

#[rustfmt::skip]
#[tokio::test(start_paused = true)]
async fn an_unlabelled_branch_is_named_by_its_exact_source_text() {
    let error = gather!(policy = finish;
        ok_after(10,   1_u8),
        fail_after::<u8>( 10, "spaced" ),
        async { Err::<u8, &str>("inline") },
        async {
            sleep(Duration::from_millis(5)).await;
            Err::<u8, &str>("multi-line")
        },
        labelled = fail_after::<u8>(1, "labelled"),
        fail_after::<u8>(
            1,
            "wrapped",
        ),
    )
    .expect_err("four branches fail");
    let Error::Failures { errors, .. } = error else {
        panic!("expected Error::Failures, got {error:?}");
    };
    let names: Vec<(usize, &str)> = errors.iter().map(|(b, _)| (b.index(), b.name())).collect();
    assert_eq!(
        names,
        [
            (1, r#"fail_after::<u8>( 10, "spaced" )"#),
            (2, r#"async { Err::<u8, &str>("inline") }"#),
            (3, r#"async { sleep(Duration::from_millis(5)).await; Err::<u8, &str>("multi-line") }"#),
            (4, "labelled"),
            (5, r#"fail_after::<u8>( 1, "wrapped", )"#),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn branches_passed_through_a_user_macro_keep_their_source_text() {
    macro_rules! both {
        ($a:expr, $b:expr) => {
            gather!($a, $b)
        };
    }
    let error = both!(ok_after(10, 1_u8), fail_after::<u8>(5, "through a macro"))
        .expect_err("the second branch fails");
    let Error::Failed {
        branch, cancelled, ..
    } = error
    else {
        panic!("expected Error::Failed, got {error:?}");
    };
    assert_eq!(branch.name(), r#"fail_after::<u8>(5, "through a macro")"#);
    assert_eq!(cancelled[0].name(), "ok_after(10, 1_u8)");
}

#[tokio::test(start_paused = true)]
async fn display_names_the_failed_branch_and_shows_its_error() {
    let text = failed_backup().await.to_string();
    assert!(text.contains("backup"), "{text}");
    assert!(text.contains("disk full"), "{text}");
    // The cancelled siblings may be listed, the failed branch comes first.
    assert!(
        text.find("backup") < text.find("primary").or(Some(usize::MAX)),
        "{text}"
    );

    let text = two_failures().await.to_string();
    for part in [r#"fail_after::<u8>(10, "first")"#, "first", "third"] {
        assert!(text.contains(part), "{part:?} missing in {text}");
    }
    assert!(text.find("first") < text.find("third"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn source_is_the_branch_error_and_into_error_gives_it_back() {
    let error = gather!(
        async {
            sleep(Duration::from_millis(10)).await;
            Ok::<u8, io::Error>(1)
        },
        missing = async {
            sleep(Duration::from_millis(5)).await;
            Err::<u8, _>(io_error("no such bucket"))
        },
    )
    .expect_err("the second branch fails");

    let source = error.source().expect("a failed branch is the source");
    let inner = source
        .downcast_ref::<io::Error>()
        .expect("the source is the branch's io::Error");
    assert_eq!(inner.kind(), io::ErrorKind::NotFound);
    assert_eq!(inner.to_string(), "no such bucket");
    assert!(error.to_string().contains("no such bucket"));

    let inner = error.into_error().expect("a failed branch has an error");
    assert_eq!(inner.to_string(), "no such bucket");
}

#[tokio::test(start_paused = true)]
async fn source_and_into_error_under_finish_give_the_first_in_branch_order() {
    let error = gather!(policy = finish;
        async {
            sleep(Duration::from_millis(20)).await;
            Err::<u8, _>(io_error("later but first"))
        },
        async {
            sleep(Duration::from_millis(10)).await;
            Err::<u8, _>(io_error("earlier but second"))
        },
    )
    .expect_err("both fail");
    assert_eq!(
        error.source().map(ToString::to_string).as_deref(),
        Some("later but first")
    );
    assert_eq!(
        error.into_error().map(|e| e.to_string()).as_deref(),
        Some("later but first")
    );
}

#[test]
fn error_of_a_send_sync_static_error_is_send_sync_static() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<Error<io::Error>>();
    send_sync_static::<Error<String>>();
    send_sync_static::<Branch>();
}

/// Two io steps at once, with `?` straight into a boxed error.
async fn two_steps(fail: bool) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let (a, b) = gather!(
        async { Ok::<u32, io::Error>(1) },
        step = async move {
            if fail {
                Err(io_error("step failed"))
            } else {
                Ok(2)
            }
        },
    )?;
    Ok(a + b)
}

#[tokio::test(start_paused = true)]
async fn question_mark_turns_the_error_into_a_boxed_error() {
    assert_eq!(two_steps(false).await.unwrap(), 3);

    let boxed = two_steps(true).await.unwrap_err();
    let error = boxed
        .downcast_ref::<Error<io::Error>>()
        .expect("the boxed error is the gather's");
    let Error::Failed { branch, error, .. } = error else {
        panic!("expected Error::Failed, got {error:?}");
    };
    assert_eq!(branch.name(), "step");
    assert_eq!(error.to_string(), "step failed");
    assert_eq!(
        boxed.source().map(ToString::to_string).as_deref(),
        Some("step failed")
    );
}

#[tokio::test(start_paused = true)]
async fn error_and_branch_derive_debug_clone_and_eq() {
    fn eq<T: Eq>(_: &T) {}
    let error = failed_backup().await;
    eq(&error);

    let copy = error.clone();
    assert_eq!(copy, error);
    assert_eq!(failed_backup().await, error);
    assert_ne!(two_failures().await, error);

    let Error::Failed {
        branch, cancelled, ..
    } = &error
    else {
        panic!("expected Error::Failed");
    };
    assert_eq!(branch.clone(), *branch);
    assert_ne!(*branch, cancelled[0]);
    eq(branch);

    let debug = format!("{error:?}");
    for part in ["Failed", "backup", "disk full", "primary"] {
        assert!(debug.contains(part), "{part:?} missing in {debug}");
    }
    assert!(format!("{branch:?}").contains("backup"));
}
