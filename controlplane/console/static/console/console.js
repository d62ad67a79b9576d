// The operator console's confirmations: a form, button or link with
// data-confirm="text" asks before it goes ahead (destructive actions).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var text = form.getAttribute("data-confirm");
  var button = event.submitter;
  if (button && button.getAttribute("data-confirm")) {
    text = button.getAttribute("data-confirm");
  }
  if (text && !window.confirm(text)) {
    event.preventDefault();
  }
}, true);
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("a[data-confirm]");
  if (link && !window.confirm(link.getAttribute("data-confirm"))) {
    event.preventDefault();
  }
}, true);
