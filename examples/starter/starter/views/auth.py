from pyramid.httpexceptions import HTTPSeeOther
from pyramid.security import forget, remember
from pyramid.view import forbidden_view_config, view_config

from .. import models


@view_config(route_name="login", renderer="starter:templates/login.jinja2")
def login(request):
    next_url = request.params.get("next") or request.route_url("home")
    message = ""
    name = ""
    if request.method == "POST":
        name = request.params["name"]
        user = request.dbsession.query(models.User).filter_by(name=name).one_or_none()
        if user is not None and user.check_password(request.params["password"]):
            headers = remember(request, user.id)
            return HTTPSeeOther(location=next_url, headers=headers)
        message = "Failed login"
        request.response.status = 400
    return {
        "message": message,
        "url": request.route_url("login"),
        "next_url": next_url,
        "name": name,
        "project": "starter",
    }


@view_config(route_name="logout")
def logout(request):
    next_url = request.route_url("home")
    return HTTPSeeOther(location=next_url, headers=forget(request))


@forbidden_view_config()
def forbidden_view(exc, request):
    if request.is_authenticated:
        request.response.status = 403
        return request.response
    next_url = request.route_url("login", _query={"next": request.url})
    return HTTPSeeOther(location=next_url)
