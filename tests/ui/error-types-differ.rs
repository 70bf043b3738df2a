use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn read() -> Result<Vec<u8>, std::io::Error> {
    Ok(Vec::new())
}

async fn run() {
    let _ = gather!(fetch(1), read(), fetch(2));
}

fn main() {}
