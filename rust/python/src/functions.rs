//! The module's functions: `render_template` (a template without a tokenizer) and `pack`.

use crate::errors::to_py;
use crate::inputs::{conversation, tools_value, vars_from_dict};
use crate::options::pack_options;
use crate::packed_batch::PyPackedBatch;
use crate::samples::{self, sample_of};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use turnpack_core::{pack, template_context, ChatTemplate, Sample};

/// Render a chat template without a tokenizer.
#[pyfunction]
#[pyo3(signature = (chat_template, messages, tools=None, add_generation_prompt=false, **template_vars))]
pub fn render_template(
    py: Python<'_>,
    chat_template: &str,
    messages: &Bound<'_, PyAny>,
    tools: Option<&Bound<'_, PyAny>>,
    add_generation_prompt: bool,
    template_vars: Option<&Bound<'_, PyDict>>,
) -> PyResult<String> {
    let template = ChatTemplate::new(chat_template).map_err(to_py)?;
    let conv = conversation(messages)?;
    let tools = tools_value(tools)?;
    let vars = vars_from_dict(template_vars)?;
    py.detach(|| {
        let ctx = template_context(
            minijinja::Value::from(conv.values()),
            tools,
            add_generation_prompt,
            vars.iter().map(|(k, v)| (k.as_str(), v)),
        );
        template.render(&ctx).map(|r| r.text)
    })
    .map_err(to_py)
}

/// Packs samples into rows of `seq_len` tokens by best-fit decreasing over a bounded buffer.
#[pyfunction]
#[pyo3(name = "pack")]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (samples, seq_len, *, buffer=1024, max_open_rows=16, overflow="drop", pad_id=0, sample_ids=None))]
pub fn pack_samples(
    py: Python<'_>,
    samples: &Bound<'_, PyAny>,
    seq_len: usize,
    buffer: usize,
    max_open_rows: usize,
    overflow: &str,
    pad_id: u32,
    sample_ids: Option<Vec<u64>>,
) -> PyResult<PyPackedBatch> {
    let opts = pack_options(buffer, max_open_rows, overflow, pad_id)?;
    let items: Vec<Bound<'_, PyAny>> = samples.try_iter()?.collect::<PyResult<_>>()?;
    let ids = samples::sample_ids(sample_ids, items.len())?;
    let parsed: Vec<Sample> = items
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (item, &id))| sample_of(item, id, i))
        .collect::<PyResult<_>>()?;
    let packed = py.detach(|| pack(&parsed, seq_len, &opts)).map_err(to_py)?;
    PyPackedBatch::new(py, packed.rows, &packed.stats)
}
