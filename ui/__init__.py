"""The app's tabs, one module each: ``build(...)`` lays out the tab's widgets inside the caller's
``gr.Tab`` and wires them to ``surm_core.session``. ``app.py`` puts the tabs together and serves."""
