use std::time::Duration;

use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn race() {
    let _ = gather!(policy = race; fetch(1), fetch(2));
}

async fn race_ok() {
    let _ = gather!(policy = race_ok; fetch(1), fetch(2));
}

async fn timeout() {
    let _ = gather!(timeout = Duration::from_secs(1); fetch(1), fetch(2));
}

async fn limit() {
    let _ = gather!(limit = 2; fetch(1), fetch(2));
}

async fn spawn() {
    let _ = gather!(spawn; fetch(1), fetch(2));
}

async fn dynamic() {
    let _ = gather!(for n in 0..3 => fetch(n));
}

fn main() {}
