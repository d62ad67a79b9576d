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
// Flag state pages: a clause row shows the inputs its operator uses
// ("is in segment" takes segments, the others an attribute and values).
// Without this script every input stays visible and still works.
document.documentElement.classList.add("js-clause-rows");
document.addEventListener("change", function (event) {
  var select = event.target;
  if (!select.matches || !select.matches("select[data-clause-op]")) {
    return;
  }
  var row = select.closest("tr");
  if (row) {
    var isSegment = select.value === "segment";
    row.classList.toggle("op-segment", isSegment);
    row.classList.toggle("op-attribute", !isSegment);
  }
});
