from pyramid.response import Response
from pyramid.view import view_config
from sqlalchemy.exc import SQLAlchemyError

from .. import models


@view_config(route_name="home", renderer="starter:templates/mytemplate.jinja2")
def my_view(request):
    try:
        query = request.dbsession.query(models.MyModel)
        one = query.filter(models.MyModel.name == "one").one()
    except SQLAlchemyError:
        return Response(db_err_msg, content_type="text/plain", status=500)
    return {"one": one, "project": "starter"}


@view_config(route_name="admin", permission="admin", renderer="starter:templates/admin.jinja2")
def admin_view(request):
    users = request.dbsession.query(models.User).order_by(models.User.name).all()
    return {"users": users, "project": "starter"}


db_err_msg = """\
Pyramid is having a problem using your SQL database.  The problem
might be caused by one of the following things:

1.  You may need to initialize your database tables with `alembic`.
    Check your README.txt for descriptions and try to run it.

2.  Your database server may not be running.  Check that the
    database server referred to by the "sqlalchemy.url" setting in
    your "development.ini" file is running.

After you fix the problem, please restart the Pyramid application to
try it again.
"""
