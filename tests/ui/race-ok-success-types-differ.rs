use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn name() -> Result<String, String> {
    Ok(String::new())
}

async fn run() {
    let _ = gather!(policy = race_ok; fetch(1), fetch(2), name());
}

fn main() {}
