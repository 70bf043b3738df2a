use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(3 = 4; fetch(1));
}

fn main() {}
