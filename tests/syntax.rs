//! The ways to write a gather that work today: delimiters, trailing commas, an explicit
//! default policy, labels.

use gather::{Error, gather};

async fn ok(n: u8) -> Result<u8, &'static str> {
    Ok(n)
}

#[test]
fn brackets_braces_and_parentheses_all_work() {
    futures::executor::block_on(async {
        assert_eq!(gather!(ok(1), ok(2)), Ok((1, 2)));
        assert_eq!(gather![ok(1), ok(2)], Ok((1, 2)));
        assert_eq!(gather! { ok(1), ok(2) }, Ok((1, 2)));
        assert_eq!(gather![policy = settle; ok(1), ok(2)], (Ok(1), Ok(2)));
    });
}

#[test]
fn a_trailing_comma_and_an_explicit_cancel_policy_change_nothing() {
    futures::executor::block_on(async {
        assert_eq!(gather!(ok(1), ok(2),), Ok((1, 2)));
        assert_eq!(gather!(policy = cancel; ok(1), ok(2)), Ok((1, 2)));
        let error = gather!(policy = cancel; ok(1), bad = async { Err::<u8, &str>("bad") },)
            .expect_err("the second branch fails");
        let Error::Failed { branch, .. } = error else {
            panic!("expected Error::Failed, got {error:?}");
        };
        assert_eq!((branch.index(), branch.name()), (1, "bad"));
    });
}

#[test]
fn a_failure_at_the_first_poll_cancels_the_branches_after_it_unpolled() {
    let log = gather_tests::Journal::new();
    let error = futures::executor::block_on(async {
        gather!(
            log.probe("first", ok(1)),
            log.probe("fails", async { Err::<u8, &str>("at once") }),
            log.probe("never polled", ok(3)),
        )
    })
    .expect_err("the second branch fails");

    assert_eq!(log.polls("never polled"), 0);
    assert!(log.dropped("never polled"));
    assert!(log.finished("first"));
    let Error::Failed {
        branch, cancelled, ..
    } = error
    else {
        panic!("expected Error::Failed, got {error:?}");
    };
    assert_eq!(branch.index(), 1);
    let cancelled: Vec<usize> = cancelled.iter().map(gather::Branch::index).collect();
    assert_eq!(cancelled, [2]);
}
