"""The browser app: a node editor (plain JavaScript in `ui/static`) served by Gradio + FastAPI."""
