"""The SOAP edge: a thin ASGI (Starlette) application in front of the router, served by
uvicorn (one process) or gunicorn with uvicorn workers (several).

``adapters.soap.app.create_app(router, authenticator, settings)``: the application;
``adapters.soap.server.serve(settings, app_factory)``: run it;
``adapters.soap.server.start_in_thread(app)``: an in-process server for tests and the demo;
``adapters.soap.settings.SoapSettings``: where it listens, TLS, limits;
``adapters.soap.services``: the services of schemas/*.wsdl and the dispatch rules;
``adapters.soap.envelope``: SOAP 1.1/1.2 envelopes and Faults; ``adapters.soap.wsdl``: serving
the WSDLs and XSDs.
"""
