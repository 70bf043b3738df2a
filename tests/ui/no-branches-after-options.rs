use gather::gather;

async fn run() {
    let _ = gather!(policy = finish;);
}

fn main() {}
