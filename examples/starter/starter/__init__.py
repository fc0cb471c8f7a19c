"""The cookiecutter-pyramid SQLAlchemy + Jinja2 starter, served by aiopyramid_ng."""

from pyramid.config import Configurator

from aiopyramid_ng.config import GreenletMapper


def main(global_config, **settings):
    """This function returns a Pyramid WSGI application."""
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        # Plain views run in the request greenlet, on the event loop: their
        # queries go through the async driver and only suspend the request.
        config.set_view_mapper(GreenletMapper)
        config.include("pyramid_jinja2")
        config.include(".routes")
        config.include(".models")
        config.include(".security")
        config.scan()
    return config.make_wsgi_app()
