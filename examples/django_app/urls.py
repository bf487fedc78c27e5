from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("signup", views.signup),
    path("count", views.count),
    path("tasks/<str:result_id>", views.result),
]
