"""The HTTP edge: AdmissionReview v1 in and out, handler dispatch, JSONPatch, the Flask app.

Layers, outermost first: app.py (Flask views: bytes in, bytes out) -> review.py (parse
the wire format, precise 400 reasons) -> handlers.py (dispatch by kind and operation)
-> networkpolicy.py / mutations.py (decisions from webhook.rules) -> response.py (the
pure decision vocabulary and build_response). Only app.py imports Flask.
"""
