use gather::gather;

async fn fetch() -> Result<u32, String> {
    Ok(1)
}

async fn run() {
    let _ = gather!(fetch(), fetch);
}

fn main() {}
