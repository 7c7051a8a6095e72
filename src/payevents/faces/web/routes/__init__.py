"""One router per area of the API and the dashboard's pages; :func:`payevents.faces.web.app.create_app` wires them."""
