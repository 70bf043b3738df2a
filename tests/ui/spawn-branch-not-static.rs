use gather::gather;

async fn fetch(n: &u32) -> Result<u32, String> {
    Ok(*n)
}

async fn run() {
    let local = 5;
    let _ = gather!(spawn; fetch(&local), fetch(&6));
}

fn main() {}
