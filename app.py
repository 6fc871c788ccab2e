"""medmm Gradio app (placeholder until the app issue lands)."""

import gradio as gr

with gr.Blocks(title="medmm") as demo:
    gr.Markdown("# medmm\nResearch demo: decision support only, not a diagnosis.")

if __name__ == "__main__":
    demo.launch()
