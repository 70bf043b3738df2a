use std::time::Duration;
use tokio::time::sleep;

async fn up(name: &'static str, ms: u64, fail: bool) -> Result<&'static str, String> {
    sleep(Duration::from_millis(ms)).await;
    if fail {
        Err(format!("{name} failed"))
    } else {
        Ok(name)
    }
}

#[tokio::test(start_paused = true)]
async fn smoke() {
    let r = gather::gather!(
        up("a", 1500, false),
        up("b", 500, true),
        c = up("c", 1000, false)
    );
    println!("{r:?}");
    let r = gather::gather!(policy = finish; up("a", 1500, false), up("b", 500, true), c = up("c", 1000, true));
    println!("{r:?}");
    let r = gather::gather!(policy = settle; up("a", 1500, false), async {
        3
    }, c = up("c", 1000, true));
    println!("{r:?}");
    let r = gather::gather!(up("a", 1500, false), up("b", 500, false));
    println!("{r:?}");
}
