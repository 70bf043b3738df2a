use gather::gather;

async fn fetch(n: u32) -> u32 {
    n
}

async fn name() -> String {
    String::new()
}

async fn run() {
    let _ = gather!(policy = race; fetch(1), name(), fetch(2));
}

fn main() {}
