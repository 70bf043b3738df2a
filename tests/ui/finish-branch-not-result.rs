use gather::gather;

async fn fetch(n: u32) -> Result<u32, String> {
    Ok(n)
}

async fn run() {
    let _ = gather!(policy = finish; async { "plain" }, fetch(1));
}

fn main() {}
