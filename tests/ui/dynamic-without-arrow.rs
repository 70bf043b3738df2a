use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(for n in 0..3 { fetch(n) });
}

fn main() {}
