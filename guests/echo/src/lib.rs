//! The smallest useful task: echo the input back.

use flowfabric_guest::{export_task, Task, TaskError};

struct Echo;

impl Task for Echo {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, TaskError> {
        flowfabric_guest::progress(50, "echoing")?;
        flowfabric_guest::frame("echo", &input)?;
        Ok(input)
    }
}

export_task!(Echo);
