use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(; fetch(1), fetch(2));
}

fn main() {}
