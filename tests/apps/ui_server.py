"""A Gradio demo served on a free local port for a test, and its ``gradio_client`` (the tab tests share it).

Example::

    @pytest.fixture(scope="module")
    def client(models_dir, tmp_path_factory):
        yield from live_client(build_demo(names=["qa"], models_dir=models_dir, examples_dir=tmp_path_factory.mktemp("ex")))
"""

import socket

from gradio_client import Client


def live_client(demo):
    """Launch ``demo`` (queued, not blocking) on a free port; yield a ``Client`` of it; close the demo after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()
