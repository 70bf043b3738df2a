use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn count() -> u32 {
    3
}

async fn run() {
    let _ = gather!(fetch(1), count());
}

fn main() {}
