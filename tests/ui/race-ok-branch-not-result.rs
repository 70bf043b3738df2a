use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(policy = race_ok; fetch(1), async { 2 });
}

fn main() {}
