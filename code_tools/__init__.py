"""Tools for code generation (textbook section 10.4), not layers and not an app.

* ``code_tools.execution``: run generated Python and its doctests in a sandbox
  (a fresh subprocess with time, memory, file and network limits; the child side
  is ``code_tools/execution_child.py``); every failure is a status, never a crash
  of the evaluator. pass@k builds on its results (``apps.metrics``).
* ``code_tools.retrieval``: BM25 over docstrings (the retrieval baseline), its
  in-graph twin for SavedModels, and retrieval-augmented prompts.

The app that uses them is ``apps/code_generation``.
"""
